#!/usr/bin/env bash
# ONNX Runtime for bench/bench_upscaler.py --onnx: onnxruntime-node 1.30.0 from the npm registry into the
# git-ignored bench/ort/node_modules, checked against the integrity hashes pinned in bench/ort/package-lock.json
# (npm ci). Its CPU runtime is bundled; ONNXRUNTIME_NODE_INSTALL=skip skips the install step's extra download.
set -euo pipefail
cd "$(dirname "$0")/ort"
command -v npm >/dev/null || { echo "fetch-onnxruntime: npm is missing (scripts/setup.sh installs it)" >&2; exit 1; }
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
node -e "import('onnxruntime-node').then(o => console.log('onnxruntime-node', o.env.versions.common))"
