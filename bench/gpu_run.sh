#!/bin/bash
# The GPU measurement, in one run (well under 10 minutes on one H100/H200): builds only the upscaler core and
# upscaler_bench against the libtorch inside the machine's PyTorch wheel, then times ours (fp16, fp32) against
# Python PyTorch fp16 channels_last on the same GPU with the same tiles, x4plus and x4fast, on a 1920x1080
# photo and a 512x512 one, with PSNR against our CPU fp32 output (bench/gpu_inputs/, made beforehand by
# bench/make_gpu_inputs.sh and carried along: it is gitignored). No package registry or network needed.
#
#   bench/gpu_run.sh                 results into $OUT (or build/gpu/results/): gpu_results.{json,txt}, logs
#   bench/gpu_run.sh --cpu-smoke     the same plumbing on the CPU (DEVICE=cpu, fp32, x4fast, 64x64 photo from
#                                    bench/make_gpu_inputs.sh --smoke): proves the script end to end without a GPU
# PYTHON=... picks the python with torch (default python3); JOBS=... the build's parallelism (default nproc).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
INPUTS=bench/gpu_inputs
BUILD=build/gpu
if [ "$SMOKE" = 1 ]; then INPUTS=bench/gpu_inputs_smoke; BUILD=build/gpu-smoke; fi
OUT=${OUT:-$BUILD/results}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/run.log"; }
t_start=$(date +%s)

[ -f "$INPUTS/manifest.json" ] || { log "no $INPUTS/manifest.json: run bench/make_gpu_inputs.sh first"; exit 1; }
{
  date -u
  uname -a
  nvidia-smi 2>&1 | head -20 || true
  "$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "gpus", torch.cuda.device_count())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)') \
  || { log "$PY has no torch: set PYTHON to the python with PyTorch"; exit 1; }
TORCH_DIR=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
log "libtorch: $PREFIX"

# 1. CMake, standalone (src/upscaler/CMakeLists.txt builds the core and upscaler_bench with libtorch alone).
BENCH=$BUILD/upscaler_bench
log "configure + build ($JOBS jobs)"
if cmake -S src/upscaler -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
     > "$OUT/build.log" 2>&1 \
   && cmake --build "$BUILD" -j"$JOBS" --target upscaler_bench >> "$OUT/build.log" 2>&1; then
  log "built with CMake"
else
  # A CUDA libtorch's CMake config wants a CUDA toolkit (nvcc, cudart headers), which a machine with only the
  # wheel may lack. The wheel has everything needed to compile and link: build by hand.
  log "CMake build failed (tail of build.log below); building with g++ directly"
  tail -30 "$OUT/build.log"
  ABI=$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  mkdir -p "$BUILD/direct"
  BENCH=$BUILD/direct/upscaler_bench
  pids=()
  for f in src/upscaler/*.cpp bench/upscaler_bench.cpp; do
    g++ -std=c++20 -O2 -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI="$ABI" -Isrc -isystem "$TORCH_DIR/include" \
      -isystem "$TORCH_DIR/include/torch/csrc/api/include" -c "$f" -o "$BUILD/direct/$(basename "$f" .cpp).o" \
      >> "$OUT/build_direct.log" 2>&1 &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  cuda_libs=""
  [ -e "$TORCH_DIR/lib/libtorch_cuda.so" ] && cuda_libs="-ltorch_cuda -lc10_cuda"
  # --no-as-needed: nothing references libtorch_cuda by symbol, but loading it registers the CUDA backend.
  [ "$ok" = 1 ] && g++ -o "$BENCH" "$BUILD"/direct/*.o -L"$TORCH_DIR/lib" -Wl,-rpath,"$TORCH_DIR/lib" \
      -Wl,--no-as-needed $cuda_libs -ltorch -ltorch_cpu -lc10 -Wl,--as-needed -lpthread \
      >> "$OUT/build_direct.log" 2>&1 || ok=0
  if [ "$ok" != 1 ]; then
    log "direct build failed too"
    grep -m 40 -E "error|undefined" "$OUT/build_direct.log"
    exit 1
  fi
  log "built with g++ directly"
fi
log "build took $(( $(date +%s) - t_start )) s"

# 2. The measurements.
if [ "$SMOKE" = 1 ]; then
  "$PY" bench/gpu_bench.py --ours "$BENCH" --inputs "$INPUTS" --out "$OUT" --device cpu --precisions fp32 \
    --ref-precision fp32 --models x4fast --tile 32 --repeat 1 --warmup 0 --threads 2 2>&1 | tee -a "$OUT/run.log"
else
  timeout 480 "$PY" bench/gpu_bench.py --ours "$BENCH" --inputs "$INPUTS" --out "$OUT" 2>&1 | tee -a "$OUT/run.log"
fi
rc=${PIPESTATUS[0]}
log "done in $(( $(date +%s) - t_start )) s (rc $rc)"
exit "$rc"
