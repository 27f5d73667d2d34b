# understudy: a thin wrapper around meson + ninja.
#
#   make up      install what is missing, build, run the example cluster
#   make test    install what is missing, build, pass every test
#
# Three build directories: build/ (the one you run), build-asan/ (ASan and
# UBSan, for the tests), build-fuzz/ (clang, libFuzzer targets).

CONFIG ?= examples/contact-center.conf
MESON_WERROR ?= -Dwerror=true
SAN_ARGS = -Db_sanitize=address,undefined -Db_lundef=false \
	-Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all

.PHONY: all deps build build-asan build-fuzz up test soak check-style \
	format fuzz bench clean

all: build

deps:
	scripts/deps

build/build.ninja:
	meson setup build $(MESON_WERROR)

build-asan/build.ninja:
	meson setup build-asan $(MESON_WERROR) $(SAN_ARGS)

build-fuzz/build.ninja:
	CC=clang meson setup build-fuzz -Dfuzz=true $(MESON_WERROR) \
		-Db_sanitize=address,undefined -Db_lundef=false

build: deps build/build.ninja
	ninja -C build

build-asan: deps build-asan/build.ninja
	ninja -C build-asan

build-fuzz: deps build-fuzz/build.ninja
	ninja -C build-fuzz

up: build
	./build/src/understudy up $(CONFIG)

test: build build-asan build-fuzz
	scripts/test

# the long runs (docs/testing.md): not part of make test
soak: build build-fuzz
	scripts/soak

check-style: deps
	scripts/check-style

format:
	clang-format -i $$(git ls-files --cached --others --exclude-standard '*.c' '*.h')

fuzz: build-fuzz
	scripts/fuzz build-fuzz 300

# benchmarks: not part of make test; results go in docs/performance.md.
# Each runs clusters: one at a time on a machine (docs/testing.md)
bench: build
	bench/failover
	bench/failover --lease-ttl 1 --hard-only --sip-runs 0
	bench/calls --rate 300 --calls 6000
	bench/calls --rate 600 --calls 6000
	bench/calls --rate 300 --calls 3000 --profile
	bench/desks
	bench/footprint

clean:
	rm -rf build build-asan build-fuzz
