# Guard: build, demo and test.
#
#   make          build build/ngx_http_guard_module.so against the Debian
#                 nginx-dev tree (/usr/share/nginx/src), --with-compat
#   make run      install what is missing, build, start the demo gateway
#   make stop     stop the demo gateway
#   make test     install what is missing, build, run the whole suite twice:
#                 against the module, then against its sanitizer variant
#                 (build/asan/, ASan + UBSan) with a debug error log
#   make asan     build the sanitizer variant only
#   make fuzz     run every libFuzzer target for FUZZ_SECONDS (default 60)
#                 each from its seed corpus (needs clang); fails on a crash

SHELL       := /bin/bash
NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
BUILD       := $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(BUILD)/ngx_http_guard_module.so
# the sanitizer variant: its own configured nginx tree, so that neither
# build rebuilds the other; it loads into the stock nginx (--with-compat)
# started with the ASan runtime preloaded (see t/lib/Guard/Test.pm)
ASAN_DIR    := $(BUILD)/asan
ASAN_BUILD  := $(ASAN_DIR)/nginx
ASAN_MODULE := $(ASAN_DIR)/ngx_http_guard_module.so
SAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all \
               -fno-omit-frame-pointer
SAN_CONF    := --with-cc-opt='$(SAN_FLAGS) -O1 -g' \
               --with-ld-opt='$(SAN_FLAGS)'

# what the module is built from: its own sources, and policy-engine's
# library (every policy-engine/src/gd_*.c), which nginx's make builds in
# each configured tree and the module links (see config, config.make)
MODULE_SRCS := config config.make $(wildcard ngx_module/*.[ch]) \
               $(wildcard policy-engine/src/gd_*.c) \
               $(wildcard policy-engine/include/*.h) \
               $(wildcard policy-engine/include/*.def) \
               policy-engine/Makefile

# config lists policy-engine's headers by a glob when nginx is configured:
# a tree is configured again when that set of names changes (this file is
# rewritten only then), not when a header's content does
GUARD_HEADERS := $(BUILD)/guard-headers.list
GUARD_HEADER_NAMES := $(sort $(notdir $(wildcard policy-engine/include/*.h \
                                   policy-engine/include/*.def)))
ifneq ($(GUARD_HEADER_NAMES),$(shell cat $(GUARD_HEADERS) 2>/dev/null))
$(shell mkdir -p $(BUILD) && echo '$(GUARD_HEADER_NAMES)' > $(GUARD_HEADERS))
endif

FUZZ_SECONDS ?= 60

.PHONY: all module asan setup run stop test test-asan unit guardctl daemons \
        bench fuzz clean

all: module

setup:
	@sh scripts/setup.sh

module: $(MODULE)

asan: $(ASAN_MODULE) $(ASAN_DIR)/ubsan_init.so

# configure_tree(tree, extra configure arguments): a fresh copy of the
# nginx-dev tree, configured with Debian's flags and the module.  The
# target is objs/Makefile, the file configure writes (it writes no
# top-level Makefile), so that a configured tree is not configured again.
# ASan stays quiet about leaks in configure's feature test programs.
define configure_tree
	rm -rf $(1)
	mkdir -p $(dir $(1))
	cp -a $(NGINX_SRC) $(1)
	cd $(1) && . ./conf_flags && ASAN_OPTIONS=detect_leaks=0 \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --with-compat $(2) \
	        --add-dynamic-module=$(CURDIR) > $(1).configure.log 2>&1 \
	    || { tail -30 $(1).configure.log; exit 1; }
endef

# build_module(tree, target): build the module in a configured tree and
# replace the target atomically (a running nginx has the old file mapped)
define build_module
	$(MAKE) -C $(1) -f objs/Makefile modules
	cp $(1)/objs/ngx_http_guard_module.so $(2).tmp
	mv -f $(2).tmp $(2)
endef

# -O2, as nginx's release builds (and Debian's) compile; nginx's
# configure alone would give -O (bench/jwt.sh measures the difference)
$(NGX_BUILD)/objs/Makefile: config config.make $(GUARD_HEADERS) \
                            $(NGINX_SRC)/conf_flags
	$(call configure_tree,$(NGX_BUILD),--with-cc-opt='-O2')

$(MODULE): $(NGX_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(call build_module,$(NGX_BUILD),$@)

$(ASAN_BUILD)/objs/Makefile: config config.make $(GUARD_HEADERS) \
                             $(NGINX_SRC)/conf_flags
	$(call configure_tree,$(ASAN_BUILD),$(SAN_CONF))

$(ASAN_MODULE): $(ASAN_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(call build_module,$(ASAN_BUILD),$@)

# preloaded by the test harness after libubsan, so that UBSan reads its
# options before nginx overwrites its environment (see the file)
$(ASAN_DIR)/ubsan_init.so: t/tools/ubsan_init.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -shared -fPIC -o $@ $<

# policy-engine: its library (ASan+UBSan variant), guardd, guardctl and
# the unit tests, all with the sanitizers
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

# make test: two passes, both must pass; each one's time is printed.
#  1. the unit tests and the end-to-end suite against the module;
#  2. the end-to-end suite against the sanitizer variant, nginx started
#     with the ASan runtime preloaded and an error_log at debug level, so
#     that the debug paths run too; a sanitizer report or a crashed worker
#     fails the test that saw it (copies in build/asan/reports/).
# make test-asan runs the second pass alone.
SAN_TEST_ENV := GUARD_MODULE=$(ASAN_MODULE) GUARD_SANITIZE=1 \
                GUARD_ERROR_LOG_LEVEL=debug \
                GUARD_SANITIZE_REPORTS=$(ASAN_DIR)/reports

test: setup module asan unit daemons
	@rc=0; t0=$$SECONDS; \
	prove -r -j2 policy-engine/build/tests t/ || rc=1; \
	t1=$$SECONDS; rm -rf $(ASAN_DIR)/reports; \
	$(SAN_TEST_ENV) prove -r -j2 t/ || rc=1; \
	t2=$$SECONDS; \
	echo "make test: pass 1 (module) $$((t1 - t0)) s," \
	     "pass 2 (ASan+UBSan, debug log) $$((t2 - t1)) s"; \
	if [ -d $(ASAN_DIR)/reports ]; then \
	    echo "sanitizer reports and crashes:"; ls $(ASAN_DIR)/reports; fi; \
	exit $$rc

test-asan: setup asan unit
	@rm -rf $(ASAN_DIR)/reports; t0=$$SECONDS; rc=0; \
	$(SAN_TEST_ENV) prove -r -j2 t/ || rc=1; \
	echo "make test-asan: $$((SECONDS - t0)) s"; \
	if [ -d $(ASAN_DIR)/reports ]; then \
	    echo "sanitizer reports and crashes:"; ls $(ASAN_DIR)/reports; fi; \
	exit $$rc

fuzz:
	@sh scripts/setup.sh fuzz
	$(MAKE) -C policy-engine fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

bench: setup module
	bash bench/jwt.sh
	bash bench/jwt_algs.sh
	bash bench/limits.sh
	bash bench/sidecar.sh
	bash bench/audit.sh

clean:
	rm -rf $(BUILD)
	$(MAKE) -C policy-engine clean
