# The front door. `make run` and `make test` do everything on a fresh Debian 12 machine.
SHELL := /bin/bash
JOBS ?= 2
BUILD ?= build/release
ASAN_BUILD ?= build/asan
PY ?= /usr/bin/python3
ARGS ?=

.PHONY: setup build build-asan run test test-unit test-model bench fuzz format clean

.setup-stamp: scripts/setup.sh scripts/fetch-models.sh scripts/fetch-web-assets.sh
	scripts/setup.sh
	@touch $@

setup: .setup-stamp

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

build-asan: setup
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPETCAM_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# Serves the API on http://0.0.0.0:8000 with the embedded SQLite database under ./data (settings: .env).
run: build
	$(BUILD)/petcam serve $(ARGS)

# Every test, in the release build and again under AddressSanitizer + UBSan.
test: build build-asan
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ctest --output-on-failure

# Figures, not pass/fail: HTTP with wrk (SQLite and PostgreSQL), the upscaler against plain PyTorch,
# and peak memory on a 12 MP photo.
bench: build
	$(PY) bench/bench_http.py --petcam $(BUILD)/petcam --json bench/results/http.json
	$(PY) bench/bench_upscaler.py --ours $(BUILD)/bench/upscaler_bench
	$(PY) bench/peak_rss.py --petcam $(BUILD)/petcam

# libFuzzer (clang, ASan + UBSan) on every parser a client or an operator's file reaches, FUZZ_SECONDS each;
# seeds from fuzz/corpus/, findings go to build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZERS = fuzz_multipart fuzz_form fuzz_jpeg_header fuzz_token fuzz_dotenv fuzz_ncnn_param
fuzz: setup
	@dpkg-query -W -f='$${Status}\n' clang libclang-rt-14-dev 2>/dev/null | grep -c "install ok installed" | grep -q 2 || \
	  $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev
	CXX=clang++ cmake -S fuzz -B build/fuzz -DCMAKE_BUILD_TYPE=Debug
	cmake --build build/fuzz -j$(JOBS)
	for t in $(FUZZERS); do \
	  mkdir -p build/fuzz/corpus-$$t && cp fuzz/corpus/$$t/* build/fuzz/corpus-$$t/ && \
	  (cd build/fuzz && ./$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 corpus-$$t 2>&1 | \
	    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' | sed "s/^/$$t: /"; exit $${PIPESTATUS[0]}) || exit 1; \
	done

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf build .setup-stamp
