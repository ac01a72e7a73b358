# Switchyard build entry points. `make run` and `make test` work on a fresh machine: both run set-up first.
#
#   make setup   install what is missing (Debian packages, .venv, librdkafka >= 2.2 in .deps)
#   make build   set-up, then a release build of the stages into .build/release
#   make run     build, then run a standalone broker in the foreground from switchyard.conf (*:8800)
#   make test    build, unit tests (swift test), then the Python end-to-end and supervisor tests (pytest)
#   make bench   build, start a stack from $(CONF) unless one runs, run switchyard-bench against it, stop it
#                (BENCH_ARGS="--subscribers 2000 --duration 20 --baseline" passes options through)
#   make clean   remove build output and run-time files (keeps .venv and .deps)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ifneq ($(wildcard /opt/swift/usr/bin/swift),)
export PATH := /opt/swift/usr/bin:$(PATH)
endif

RDKAFKA := $(CURDIR)/.deps/librdkafka
CONF ?= switchyard.conf
PYTEST_ARGS ?= -q
BENCH_ARGS ?=
# the first Listen address of $(CONF), with * read as 127.0.0.1
BENCH_TARGET ?= $(shell sed -n 's/^[[:space:]]*Listen[[:space:]]*=[[:space:]]*\([^,#[:space:]]*\).*/\1/p' $(CONF) | head -n1 | sed 's/^\*:/127.0.0.1:/; s/^0\.0\.0\.0:/127.0.0.1:/')

# Evaluated in the shell when a recipe runs, after set-up may have built .deps/librdkafka:
# use the local librdkafka through pkg-config and find it at run time through an rpath.
SWIFT_ENV = if [ -d "$(RDKAFKA)/lib/pkgconfig" ]; then \
        export PKG_CONFIG_PATH="$(RDKAFKA)/lib/pkgconfig$${PKG_CONFIG_PATH:+:$$PKG_CONFIG_PATH}"; \
        SWIFT_LINK="-Xlinker -rpath -Xlinker $(RDKAFKA)/lib"; \
    else SWIFT_LINK=""; fi;

.PHONY: all setup build run test unit-test e2e-test bench clean distclean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@$(SWIFT_ENV) swift build -c release $$SWIFT_LINK

run: build
	./switchyard run -c $(CONF)

# swift test first, pytest last: the pytest summary line is the last line printed.
test: build
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory e2e-test

unit-test:
	@$(SWIFT_ENV) swift build --build-tests $$SWIFT_LINK && swift test --skip-build $$SWIFT_LINK

e2e-test:
	@.venv/bin/python -m pytest tests $(PYTEST_ARGS)

bench: build
	@test -x .build/release/switchyard-bench || { echo "make bench: .build/release/switchyard-bench was not built" >&2; exit 1; }
	@if ./switchyard status -c $(CONF) >/dev/null 2>&1; then \
	    .build/release/switchyard-bench --target $(BENCH_TARGET) $(BENCH_ARGS); \
	else \
	    ./switchyard start -c $(CONF) && trap './switchyard stop -c $(CONF) >/dev/null' EXIT && \
	    .build/release/switchyard-bench --target $(BENCH_TARGET) $(BENCH_ARGS); \
	fi

clean:
	rm -rf .build .build-e2e var .pytest_cache

distclean: clean
	rm -rf .venv .deps
