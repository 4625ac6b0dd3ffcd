# Guard: build, install, package, demo and test.
#
#   make          build what a user runs: build/ngx_http_guard_module.so
#                 against the Debian nginx-dev tree (/usr/share/nginx/src),
#                 --with-compat, and the release guardd and guardctl
#                 (policy-engine/build/release/, without sanitizers)
#   make install  install them, /etc/guard and the systemd unit (DESTDIR,
#                 PREFIX, see docs/install.md); make uninstall undoes it
#   make deb      the Debian packages libnginx-mod-http-guard and guard,
#                 in build/deb/
#   make run      install what is missing, build, start the demo gateway
#   make stop     stop the demo gateway
#   make test     install what is missing, build, run the whole suite twice:
#                 against the module, then against its sanitizer variant
#                 (build/asan/, ASan + UBSan) with a debug error log
#   make asan     build the sanitizer variant only
#   make fuzz     run every libFuzzer target for FUZZ_SECONDS (default 60)
#                 each from its seed corpus (needs clang); fails on a crash
#
# Every build goal (module, asan, daemons, unit, guardctl) runs in a make
# that holds build/.lock (flock), so that two makes started at once take
# turns instead of configuring or compiling the same tree together.

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
$(shell mkdir -p $(BUILD) && echo '$(GUARD_HEADER_NAMES)' > $(GUARD_HEADERS).$$$$ \
        && mv -f $(GUARD_HEADERS).$$$$ $(GUARD_HEADERS))
endif

FUZZ_SECONDS ?= 60

# the release guardd and guardctl, and what they are built from (the
# same prerequisites as in policy-engine/Makefile, so that a second make
# with nothing changed does not even enter policy-engine/)
RELEASE_DIR := policy-engine/build/release
GUARDD      := $(RELEASE_DIR)/guardd
GUARDCTL    := $(RELEASE_DIR)/guardctl
PE_LIB_SRCS := $(wildcard policy-engine/src/gd_*.c) \
               $(wildcard policy-engine/include/*.h) \
               $(wildcard policy-engine/include/*.def) policy-engine/Makefile
GUARDD_SRCS := $(wildcard policy-engine/src/guardd*.[ch]) $(PE_LIB_SRCS)
GUARDCTL_SRCS := $(wildcard policy-engine/src/guardctl*.[ch]) $(PE_LIB_SRCS)

.PHONY: all module asan setup run stop test test-asan unit guardctl daemons \
        bench fuzz clean install uninstall deb

all: module daemons

setup:
	@sh scripts/setup.sh

# The build goals.  Run as `make GOAL`, each goal is made again by a make
# that holds build/.lock (GUARD_LOCKED=1 marks that make): the lock is
# taken per goal and released before the next, so make test runs its
# tests without it, and a make started meanwhile waits only for a build.
BUILD_GOALS := module asan daemons unit guardctl

ifndef GUARD_LOCKED

$(BUILD_GOALS):
	@mkdir -p $(BUILD)
	@flock $(BUILD)/.lock $(MAKE) --no-print-directory GUARD_LOCKED=1 $@

else

module: $(MODULE)

asan: $(ASAN_MODULE) $(ASAN_DIR)/ubsan_init.so

# the release guardd and guardctl, optimized, without the sanitizers
daemons: $(GUARDD) $(GUARDCTL)

$(GUARDD): $(GUARDD_SRCS)
	$(MAKE) -C policy-engine build/release/guardd

$(GUARDCTL): $(GUARDCTL_SRCS)
	$(MAKE) -C policy-engine build/release/guardctl

# policy-engine: its library (ASan+UBSan variant), guardd, guardctl and
# the unit tests, all with the sanitizers
unit:
	$(MAKE) -C policy-engine

guardctl:
	$(MAKE) -C policy-engine build/guardctl

endif

# make install: see docs/install.md.  PREFIX holds the programs and the
# man pages; nginx's module directory, the snippet, /etc/guard, the unit
# and the tmpfiles.d entry go where Debian's nginx and systemd look for
# them, whatever PREFIX is.  An existing guardd.conf or policy directory
# is left as it is (a reinstall keeps the operator's configuration).
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
SBINDIR      ?= $(PREFIX)/sbin
MANDIR       ?= $(PREFIX)/share/man
DATADIR      ?= $(PREFIX)/share/guard
NGX_MODDIR   ?= /usr/lib/nginx/modules
NGX_MODCONF  ?= /usr/share/nginx/modules-available
CONFDIR      ?= /etc/guard
UNITDIR      ?= /lib/systemd/system
TMPFILESDIR  ?= /usr/lib/tmpfiles.d
D            := $(DESTDIR)
# the man pages, section from the name: docs/man/guardd.8 -> man8/
MANPAGES     := $(wildcard docs/man/*.[1-8])
MAN_DEST     := $(foreach m,$(MANPAGES),\
                  $(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
# the example policy directory, installed as CONFDIR/policies, and the
# guardrail packs, installed as CONFDIR/policies/packs
POLICY_FILES := $(shell cd policies/examples && find . -type f | sort)
PACK_FILES   := $(notdir $(wildcard policies/packs/*.json))
# the PostgreSQL store's migrations (guardctl db migrate), DATADIR/migrations
MIGRATIONS   := $(notdir $(wildcard migrations/*.sql))
GUARD_VERSION := $(shell sed -n 's/.*define GUARD_VERSION "\(.*\)".*/\1/p' \
                   policy-engine/include/gd_version.h)

install: all
	install -d $(D)$(NGX_MODDIR) $(D)$(NGX_MODCONF) $(D)$(SBINDIR) \
	    $(D)$(BINDIR) $(D)$(UNITDIR) $(D)$(TMPFILESDIR)
	install -m 0644 $(MODULE) $(D)$(NGX_MODDIR)/ngx_http_guard_module.so
	echo 'load_module $(NGX_MODDIR)/ngx_http_guard_module.so;' \
	    > $(D)$(NGX_MODCONF)/mod-http-guard.conf
	chmod 0644 $(D)$(NGX_MODCONF)/mod-http-guard.conf
	install -m 0755 $(GUARDD) $(D)$(SBINDIR)/guardd
	install -m 0755 $(GUARDCTL) $(D)$(BINDIR)/guardctl
	sed 's|@SBINDIR@|$(SBINDIR)|g' conf/guardd.service.in \
	    > $(D)$(UNITDIR)/guardd.service
	chmod 0644 $(D)$(UNITDIR)/guardd.service
	install -m 0644 conf/guard.tmpfiles $(D)$(TMPFILESDIR)/guard.conf
	@set -e; $(foreach m,$(MANPAGES),\
	    install -D -m 0644 $(m) $(D)$(filter %/$(notdir $(m)),$(MAN_DEST));)
	install -d $(D)$(DATADIR)/migrations
	install -m 0644 $(addprefix migrations/,$(MIGRATIONS)) \
	    $(D)$(DATADIR)/migrations
	install -d -m 0755 $(D)$(CONFDIR)
	install -d -m 0750 $(D)$(CONFDIR)/keys
	@if [ -e $(D)$(CONFDIR)/guardd.conf ]; then \
	    echo "install: kept $(D)$(CONFDIR)/guardd.conf"; \
	else install -m 0644 conf/guardd.conf $(D)$(CONFDIR)/guardd.conf; fi
	@if [ -e $(D)$(CONFDIR)/policies ]; then \
	    echo "install: kept $(D)$(CONFDIR)/policies/"; \
	else set -e; for f in $(POLICY_FILES); do \
	    install -D -m 0644 policies/examples/$$f \
	        $(D)$(CONFDIR)/policies/$$f; done; fi
	@set -e; for f in $(PACK_FILES); do \
	    to=$(D)$(CONFDIR)/policies/packs/$$f; \
	    if [ ! -e $$to ]; then \
	        install -D -m 0644 policies/packs/$$f $$to; \
	    elif ! cmp -s policies/packs/$$f $$to; then \
	        echo "install: kept $$to (changed; the new one is" \
	            "policies/packs/$$f)"; fi; done
	@[ -n "$(D)" ] || echo "install: done; the user guard, the directories" \
	    "and the first start: docs/install.md (First start)"

# make uninstall removes every file install put, and the configuration
# files only while they are the ones installed: an edited guardd.conf or
# policy file is kept (and named), and so are the directories holding it
uninstall:
	rm -f $(D)$(NGX_MODDIR)/ngx_http_guard_module.so \
	    $(D)$(NGX_MODCONF)/mod-http-guard.conf $(D)$(SBINDIR)/guardd \
	    $(D)$(BINDIR)/guardctl $(D)$(UNITDIR)/guardd.service \
	    $(D)$(TMPFILESDIR)/guard.conf $(addprefix $(D),$(MAN_DEST)) \
	    $(addprefix $(D)$(DATADIR)/migrations/,$(MIGRATIONS))
	@rmdir $(D)$(DATADIR)/migrations $(D)$(DATADIR) 2>/dev/null || true
	@for f in guardd.conf:conf/guardd.conf \
	        $(foreach p,$(POLICY_FILES),policies/$(p):policies/examples/$(p)) \
	        $(foreach p,$(PACK_FILES),policies/packs/$(p):policies/packs/$(p)); do \
	    to=$(D)$(CONFDIR)/$${f%%:*}; from=$${f#*:}; \
	    if cmp -s $$from $$to; then rm -f $$to; \
	    elif [ -e $$to ]; then echo "uninstall: kept $$to (changed)"; fi; \
	done
	@for d in $$(cd policies/examples && find . -mindepth 1 -type d \
	        | sort -r) packs ""; do \
	    rmdir $(D)$(CONFDIR)/policies/$$d 2>/dev/null || true; done
	@rmdir $(D)$(CONFDIR)/keys $(D)$(CONFDIR) 2>/dev/null || true

# make deb: build/deb/libnginx-mod-http-guard_VERSION_ARCH.deb (the module
# and its snippet) and build/deb/guard_VERSION_ARCH.deb (the rest), from
# the tree make install puts into build/deb/root (see packaging/deb/)
deb: all
	rm -rf $(BUILD)/deb/root
	$(MAKE) --no-print-directory install DESTDIR=$(BUILD)/deb/root PREFIX=/usr
	sh packaging/deb/mkdeb.sh $(BUILD)/deb $(GUARD_VERSION) $(NGINX_SRC)

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

# the longest test files start first, so that the two jobs of prove -j2
# end together; the unit tests run in the first pass only, t_prefilter
# (Hyperscan compiles under ASan) among the longest
T_FIRST := t/80-bench.t t/02-library.t t/86-sink-faults.t t/13-fuzz.t \
           t/53-guardrails-scan.t
T_ALL    = $(T_FIRST) $$(ls t/*.t | grep -vxF $(addprefix -e ,$(T_FIRST)))
U_FIRST := policy-engine/build/tests/t_prefilter.t
T_PASS1  = $(T_FIRST) $(U_FIRST) \
           $$(ls t/*.t | grep -vxF $(addprefix -e ,$(T_FIRST))) \
           $$(ls policy-engine/build/tests/*.t | grep -vxF $(addprefix -e ,$(U_FIRST)))

# the guardrails' compiled Hyperscan databases, shared by every test
# (docs/guardrails.md, "Speed"): the packs are compiled once per suite
TEST_ENV := GUARD_HSCACHE=$(CURDIR)/build/hscache

test: setup all asan unit
	@rc=0; t0=$$SECONDS; \
	$(TEST_ENV) prove -j2 $(T_PASS1) || rc=1; \
	t1=$$SECONDS; rm -rf $(ASAN_DIR)/reports; \
	$(TEST_ENV) $(SAN_TEST_ENV) prove -j2 $(T_ALL) || rc=1; \
	t2=$$SECONDS; \
	echo "make test: pass 1 (module) $$((t1 - t0)) s," \
	     "pass 2 (ASan+UBSan, debug log) $$((t2 - t1)) s"; \
	if [ -d $(ASAN_DIR)/reports ]; then \
	    echo "sanitizer reports and crashes:"; ls $(ASAN_DIR)/reports; fi; \
	exit $$rc

test-asan: setup asan unit
	@rm -rf $(ASAN_DIR)/reports; t0=$$SECONDS; rc=0; \
	$(TEST_ENV) $(SAN_TEST_ENV) prove -j2 $(T_ALL) || rc=1; \
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
	bash bench/breaker.sh
	@sh scripts/setup.sh bench || echo "make bench: without ModSecurity" \
	    "and the CRS, bench/guardrails.sh skips their variants"
	bash bench/guardrails.sh
	bash bench/store.sh

clean:
	rm -rf $(BUILD)
	$(MAKE) -C policy-engine clean
