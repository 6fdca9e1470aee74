#!/usr/bin/env bash
# The GPU job in one command: the CUDA tests, then the speed benchmark.
#   bash benchmarks/run_gpu_checks.sh
# Writes $OUT/gpu_tests.log, $OUT/RESULTS_gpu.md and $OUT/benchmark.log ($OUT defaults to
# ./gpu_results). Needs torch with CUDA; the package need not be installed (PYTHONPATH is set).
# About 5 minutes on an H100/H200: tests ~1.5 min (one inductor compile), benchmark ~3 min.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/gpu_tests.log"

"$PY" -m pytest tests/test_torch_attention.py tests/test_device.py tests/gpu \
  -p no:nbval -p no:cacheprovider -o addopts="" -q -rs --durations=5 2>&1 | tee -a "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

# BENCH_ARGS passes extra options, e.g. BENCH_ARGS="--compile-modes reduce-overhead" for a shorter run.
timeout 360 "$PY" benchmarks/cross_attention_speed.py --out "$OUT/RESULTS_gpu.md" ${BENCH_ARGS:-} 2>&1 \
  | grep -v -E '^(USDT|ERROR):' | tee "$OUT/benchmark.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu tests exit code: $tests_rc; benchmark exit code: $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
