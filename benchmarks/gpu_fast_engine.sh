#!/usr/bin/env bash
# The fast engine (static KV cache + CUDA graphs) on the device (H200), as run for docs/benchmarks.md.
#   bash benchmarks/gpu_fast_engine.sh check      # tests/test_cuda.py, then bench_decode.py on the Llama-3.2-1B shape
#   bash benchmarks/gpu_fast_engine.sh compile    # graphs vs graphs+compile (torch.compile before capture), 1B shape
#   bash benchmarks/gpu_fast_engine.sh embedded   # bench_decode.py on the embedded default: fp32 (its default), bf16
#   bash benchmarks/gpu_fast_engine.sh shapes     # bench_decode.py on the Llama-2-7B shape
#   bash benchmarks/gpu_fast_engine.sh cli        # medusa.py -ds tree --compare-single-head (engine auto = graphs)
#   bash benchmarks/gpu_fast_engine.sh sizes      # captured prefill; tree sizes under graphs, fp32 and bf16
#   bash benchmarks/gpu_fast_engine.sh sizes-compiled  # the same under --engine compiled, and the 7B compiled steps
# The embedded stages need the GGUF staged as /root/stage/smollm2.gguf and the wheels of .whl/ installed (see
# ../shared/tools/stage-smollm2.sh and device-wheels.sh). Results: JSON files in $OUT (docs/measured/bench-*.json).
set -euo pipefail
export MEDUSA_EMBEDDED_GGUF=${MEDUSA_EMBEDDED_GGUF:-/root/stage/smollm2.gguf} MEDUSA_CACHE=${MEDUSA_CACHE:-/root/medusa-cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="python3 benchmarks/bench_decode.py"

case "${1:-}" in
check)
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -m pytest -q tests/test_cuda.py
  $B --model shape:llama-3.2-1b --step-costs --project-tau 2.573 --out "$OUT/bench-h200-llama-3.2-1b-shape.json"
  ;;
compile)
  $B --model shape:llama-3.2-1b --methods single-head,tree --engines graphs,graphs+compile --step-costs \
    --out "$OUT/bench-h200-1b-compile.json"
  ;;
embedded)
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto --step-costs \
    --out "$OUT/bench-h200-embedded-fp32.json"
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype bfloat16 --methods hf-static,single-head,tree \
    --engines graphs --step-costs --out "$OUT/bench-h200-embedded-bf16.json"
  ;;
shapes)
  $B --model shape:llama-2-7b --step-costs --project-tau 2.573 --out "$OUT/bench-h200-llama-2-7b-shape.json"
  ;;
sizes)  # as run on 2026-11-29 (the prefill captured): tree sizes under graphs, fp32 with identity check, bf16
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto --step-costs --engines graphs \
    --methods hf-static,single-head,tree,tree-63,tree-31,tree-15,mh-w2s2 --out "$OUT/bench-h200-embedded-sizes-fp32.json"
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype bfloat16 --step-costs --engines graphs \
    --methods hf-static,single-head,tree,tree-63,tree-31 --out "$OUT/bench-h200-embedded-sizes-bf16.json"
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto --engines eager,graphs \
    --methods hf-dynamic,hf-static,single-head,tree,tree-31 --out "$OUT/bench-h200-embedded-fp32-prefill.json"
  $B --model shape:smollm2-135m --dtype float32 --methods single-head,tree-15,tree-31,tree-63 --engines graphs \
    --step-costs --profile -n 1 -mol 32 --rounds 1 --out "$OUT/profile-135m-fp32-tree-sizes.json"
  ;;
sizes-compiled)  # as run on 2026-11-29: compiled embedded (shipped tree; 31 and 63 nodes), and the 7B shape
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto --step-costs --engines compiled \
    --methods hf-static,single-head,tree --out "$OUT/bench-h200-embedded-compiled-prefill.json"
  $B --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype auto --step-costs --engines eager,compiled \
    --methods hf-static,single-head,tree-31,tree-63 --out "$OUT/bench-h200-embedded-compiled-sizes.json"
  $B --model shape:llama-2-7b --methods hf-static,single-head,tree --engines graphs,compiled --step-costs \
    --project-tau 2.573 --out "$OUT/bench-h200-7b-prefill.json"
  ;;
cli)
  python3 medusa.py -ds tree --compare-single-head -d in22-gen-sample -n 20 -mol 128 -o "$OUT/cli-tree" 2>&1 \
    | grep -v -E 'it/s\]|s/it\]|ex/s\]'
  ;;
*)
  echo "usage: $0 check|compile|embedded|shapes|sizes|sizes-compiled|cli" >&2
  exit 2
  ;;
esac
