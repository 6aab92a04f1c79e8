#!/usr/bin/env bash
# One device call after the merge of issue 10 and the captured prefill (as run for docs/benchmarks.md, 2026-11-29):
# the CUDA tests, the captured prefill against an eager prefill in one process (A/B), grading a submission on the GPU,
# and the CLI's tree run beside single-head. Needs the staged GGUF and .whl installed (see gpu_fast_engine.sh).
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=${MEDUSA_EMBEDDED_GGUF:-/root/stage/smollm2.gguf} MEDUSA_CACHE=${MEDUSA_CACHE:-/root/medusa-cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
quiet() { grep -v -E 'it/s\]|s/it\]|ex/s\]|warm-up|^round'; }
timeout 120 python3 -m pytest -q tests/test_cuda.py 2>&1 | tail -4
timeout 200 python3 benchmarks/bench_decode.py --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto \
  --engines graphs,graphs-eager-prefill --methods hf-static,single-head,tree --out "$OUT/bench-h200-prefill-ab.json" \
  2>&1 | quiet | tail -8
timeout 60 python3 medusa.py -n 3 -mol 16 -ds multi-head --generator docs/example_submission.py:MedusaTextGenerator \
  -o "$OUT/grade" 2>&1 | quiet | tail -30
timeout 90 python3 medusa.py -ds tree --compare-single-head -d in22-gen-sample -n 20 -mol 128 -o "$OUT/cli-tree" 2>&1 \
  | quiet | tail -14
