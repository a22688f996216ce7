# The front door. `make run` and `make test` do everything on a fresh Debian 12 machine.
SHELL := /bin/bash
JOBS ?= 2
BUILD ?= build/release
ASAN_BUILD ?= build/asan
TSAN_BUILD ?= build/tsan
PY ?= /usr/bin/python3
ARGS ?=

.PHONY: setup build build-asan build-tsan run test test-tsan test-reliability test-docker bench fuzz format clean

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

# Every test, in the release build and again under AddressSanitizer + UBSan (the reliability suite's short
# version and the scale-out test in the release build only), then the concurrency tests under ThreadSanitizer.
test: build build-asan
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ctest --output-on-failure
	$(MAKE) test-tsan

# ThreadSanitizer on what many threads share: the rate limiter, the work pool, and the job queue (claims by
# concurrent workers on SQLite and PostgreSQL, the JobRunner's worker and heartbeat threads).
TSAN_TESTS = Concurrency.*:JobQueue.*:RateLimiter.*:*ConcurrentClaimersNeverShareAJob*:*ConcurrentStartsApplyEachMigrationOnce*
build-tsan: setup
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPETCAM_TSAN=ON
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target unit_tests

test-tsan: build-tsan
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  tests/with-postgres.sh $(TSAN_BUILD)/tests/unit/unit_tests --gtest_filter='$(TSAN_TESTS)'

# The long reliability suite (docs/RELIABILITY.md): kill -9 chaos, PostgreSQL outages, a full disk, SIGTERM
# under load, 1,000 connections and slow clients, a 10-minute upload soak, security checks; SQLite and PostgreSQL.
test-reliability: build
	for db in sqlite postgres; do \
	  PETCAM_RELIABILITY=full PETCAM_TEST_DATABASE=$$db PETCAM_BIN=$(BUILD)/petcam \
	    $(PY) -m pytest -q -s -p no:cacheprovider tests/reliability || exit 1; \
	done

# The Docker deployment built and run for real (tests/docker/run.sh): starts dockerd without a bridge or iptables
# when none runs, makes the base images from Debian's packages when missing (scripts/docker-images.sh), builds
# deploy/Dockerfile, runs deploy/docker-compose.yml on 127.0.0.1 (host networking) and prints the figures.
test-docker:
	tests/docker/run.sh

# Figures, not pass/fail: HTTP with wrk (SQLite and PostgreSQL), the upscaler against plain PyTorch,
# and peak memory on a 12 MP photo.
bench: build
	$(PY) bench/bench_http.py --petcam $(BUILD)/petcam --json bench/results/http.json
	$(PY) bench/bench_upscaler.py --ours $(BUILD)/bench/upscaler_bench
	$(PY) bench/peak_rss.py --petcam $(BUILD)/petcam

# libFuzzer (clang, ASan + UBSan) on every parser a client or an operator's file reaches, FUZZ_SECONDS each;
# seeds from fuzz/corpus/, findings go to build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZERS = fuzz_multipart fuzz_form fuzz_download_headers fuzz_json_body fuzz_query fuzz_jpeg_header fuzz_image_header fuzz_metadata fuzz_token fuzz_dotenv fuzz_ncnn_param
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
