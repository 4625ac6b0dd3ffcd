# Guard: build, demo and test.
#
#   make          build build/ngx_http_guard_module.so against the Debian
#                 nginx-dev tree (/usr/share/nginx/src), --with-compat
#   make run      install what is missing, build, start the demo gateway
#   make stop     stop the demo gateway
#   make test     install what is missing, build, run the whole suite
#   make fuzz     run every libFuzzer target for FUZZ_SECONDS (default 60)
#                 each from its seed corpus (needs clang); fails on a crash

SHELL       := /bin/bash
NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
BUILD       := $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(BUILD)/ngx_http_guard_module.so

MODULE_SRCS := config $(wildcard ngx_module/*.[ch]) \
               $(wildcard policy-engine/src/*.c) \
               $(wildcard policy-engine/include/*.h)

FUZZ_SECONDS ?= 60

.PHONY: all module setup run stop test unit guardctl daemons bench fuzz clean

all: module

setup:
	@sh scripts/setup.sh

module: $(MODULE)

$(NGX_BUILD)/Makefile: config
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-compat \
	        --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	@# replace atomically: a running nginx has the old file mapped
	cp $(NGX_BUILD)/objs/ngx_http_guard_module.so $@.tmp
	mv -f $@.tmp $@

# policy-engine: shared library, unit tests (ASan+UBSan)
unit:
	$(MAKE) -C policy-engine

guardctl:
	$(MAKE) -C policy-engine build/guardctl

# the demo's guardd and guardctl, optimized, without the sanitizers
daemons:
	$(MAKE) -C policy-engine release build/release/guardctl

run: setup module daemons
	@sh conf/demo.sh start

stop:
	@sh conf/demo.sh stop

test: setup module unit
	prove -r -j2 policy-engine/build/tests t/

fuzz:
	@sh scripts/setup.sh fuzz
	$(MAKE) -C policy-engine fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

bench: setup module
	bash bench/jwt.sh
	bash bench/limits.sh
	bash bench/sidecar.sh
	bash bench/audit.sh

clean:
	rm -rf $(BUILD)
	$(MAKE) -C policy-engine clean
