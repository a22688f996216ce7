# The front door. `make run` and `make test` do everything on a fresh Debian 12 machine.
JOBS ?= 2
BUILD ?= build/release
ASAN_BUILD ?= build/asan
PY ?= /usr/bin/python3
ARGS ?= --help

.PHONY: setup build build-asan run test test-unit test-model bench format clean

.setup-stamp: scripts/setup.sh scripts/fetch-models.sh
	scripts/setup.sh
	@touch $@

setup: .setup-stamp

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

build-asan: setup
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPETCAM_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# Until the service lands, `make run` runs the CLI: make run ARGS="upscale in.jpg out.jpg".
run: build
	$(BUILD)/petcam $(ARGS)

# Every test, in the release build and again under AddressSanitizer + UBSan.
test: build build-asan
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ctest --output-on-failure

# Figures, not pass/fail: the upscaler against plain PyTorch, and peak memory on a 12 MP photo.
bench: build
	$(PY) bench/bench_upscaler.py --ours $(BUILD)/bench/upscaler_bench
	$(PY) bench/peak_rss.py --petcam $(BUILD)/petcam

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf build .setup-stamp
