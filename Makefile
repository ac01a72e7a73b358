# Switchyard build entry points. `make run` and `make test` work on a fresh machine: both run set-up first.
#
#   make setup   install what is missing (Debian packages, .venv, librdkafka >= 2.2 in .deps)
#   make build   set-up, then a release build of the stages into .build/release
#   make run     build, then run a standalone broker in the foreground from switchyard.conf (*:8800)
#   make run-kafka  build, start Tansu on 127.0.0.1:9092, run a Kafka-mode node (switchyard-kafka.conf)
#   make test    build, unit tests (swift test), fuzz smoke, then the Python end-to-end and supervisor tests (pytest)
#   make fuzz-smoke  each libFuzzer target of fuzzing/ for FUZZ_SECONDS (20) from its seed corpus (scripts/fuzz.sh)
#   make bench   build, then scripts/bench.sh: switchyard-bench against a throw-away stack and the baseline
#                (BENCH_ARGS="--subscribers 500 --duration 5" passes options through)
#   make bench-peers  build, then scripts/bench-peers.sh: the same fan-out against Switchyard (v1 and MQTT),
#                mosquitto, nats-server and a C floor program, one table (PEERS_* variables: see the script)
#   make clean   remove build output and run-time files (keeps .venv and .deps)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ifneq ($(wildcard /opt/swift/usr/bin/swift),)
export PATH := /opt/swift/usr/bin:$(PATH)
endif

RDKAFKA := $(CURDIR)/.deps/librdkafka
CONF ?= switchyard.conf
PYTEST_ARGS ?= -q
FUZZ_SECONDS ?= 20
BENCH_ARGS ?=

# Evaluated in the shell when a recipe runs, after set-up may have built .deps/librdkafka:
# use the local librdkafka through pkg-config and find it at run time through an rpath.
SWIFT_ENV = if [ -d "$(RDKAFKA)/lib/pkgconfig" ]; then \
        export PKG_CONFIG_PATH="$(RDKAFKA)/lib/pkgconfig$${PKG_CONFIG_PATH:+:$$PKG_CONFIG_PATH}"; \
        SWIFT_LINK="-Xlinker -rpath -Xlinker $(RDKAFKA)/lib"; \
    else SWIFT_LINK=""; fi;

.PHONY: all setup build run run-kafka test unit-test fuzz-smoke e2e-test bench bench-peers clean distclean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@$(SWIFT_ENV) swift build -c release $$SWIFT_LINK

run: build
	./switchyard run -c $(CONF)

# A local Kafka demo: Tansu on 127.0.0.1:9092 (memory storage), then a Kafka-mode node in the foreground.
TANSU_DIR := $(CURDIR)/var/tansu
run-kafka: build
	@bash scripts/tansu.sh status $(TANSU_DIR) >/dev/null 2>&1 || bash scripts/tansu.sh start 9092 $(TANSU_DIR) >/dev/null
	@trap 'bash scripts/tansu.sh stop $(TANSU_DIR) >/dev/null' EXIT; ./switchyard run -c switchyard-kafka.conf

# swift test first, pytest last: the pytest summary line is the last line printed.
test: build
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory e2e-test

unit-test:
	@$(SWIFT_ENV) swift build --build-tests $$SWIFT_LINK && swift test --skip-build $$SWIFT_LINK

# The sanitizer build (SwiftNIO included) is cached in fuzzing/.build; a crash fails the target.
fuzz-smoke:
	@bash scripts/fuzz.sh all $(FUZZ_SECONDS)

e2e-test:
	@.venv/bin/python -m pytest tests $(PYTEST_ARGS)

bench: build
	@BENCH_SKIP_BUILD=1 bash scripts/bench.sh $(BENCH_ARGS)

bench-peers: build
	@BENCH_SKIP_BUILD=1 bash scripts/bench-peers.sh

clean:
	rm -rf .build .build-e2e var .pytest_cache fuzzing/.build

distclean: clean
	rm -rf .venv .deps
