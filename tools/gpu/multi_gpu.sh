#!/usr/bin/env bash
# The multi-GPU checks, on one host with 2 or more CUDA GPUs. Subcommands (default: all):
#   tests    python -m pytest tests/test_cuda_multi.py tests/test_cuda.py: a model split with --device-map auto
#            decodes the one-GPU tokens; a data-parallel launch gives the one-process rows
#                                                           -> $OUT/logs/tests.log
#   tables   the assignment table (single-head and multi-head W x S) on all IN22-Gen rows, on GPU 0 alone and then
#            as 2 data-parallel processes (accelerate launch); compares row for row: identical tokens, equal
#            metrics, τ, wall time of each and their ratio (both include loading)
#                                                           -> $OUT/table-1gpu/, $OUT/table-2gpu/, $OUT/tables.txt
#   split7b  a random Llama-2-7B-shaped model in fp32 (tools/make_random_model.py, about 27 GB) decoding 8 IN22-Gen
#            rows with single-head, multi-head and tree, on GPU 0 alone and split over 2 GPUs (--device-map auto
#            --max-memory 0=14GiB,1=40GiB, which leaves about half the layers for GPU 1); compares tokens, ms per
#            decoding step and τ                             -> $OUT/7b-one-*/, $OUT/7b-split-*/, $OUT/split7b.txt
# Inputs (environment):
#   DATA=../shared/data    holds in22/gen.hin_Deva
#   OUT=results/multi_gpu  a new folder; logs/, provenance.json, the random model (rand7b/) too
# Usage:
#   bash tools/gpu/multi_gpu.sh [tests] [tables] [split7b] [all]
#   OUT=results/multi_gpu-2 bash tools/gpu/multi_gpu.sh tables
# Run time on 2 H100/H200: tests a few minutes; tables two 1024-row assignment tables (all strategies of the grid,
# several minutes each); split7b about 10 min (the model is built and saved first).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
check_args "tests tables split7b all" "$@"
OUT=${OUT:-results/multi_gpu}
start_run multi_gpu
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$gpus" -ge 2 ] || { echo "error: these checks need 2 CUDA GPUs; nvidia-smi lists $gpus" >&2; exit 1; }
ACC=(accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no)

timed() {  # NAME COMMAND...: step NAME, then its wall seconds in $OUT/logs/NAME.wall
  local name=$1 t0
  shift
  t0=$(date +%s%N)
  step "$name" "$@"
  awk -v t0="$t0" -v t1="$(date +%s%N)" 'BEGIN { printf "%.1f\n", (t1 - t0) / 1e9 }' > "$OUT/logs/$name.wall"
}

if wants tests; then
  step tests "$PY" -m pytest -q tests/test_cuda_multi.py tests/test_cuda.py
fi
if wants tables; then
  in22=$(data in22/gen).hin_Deva  # the Hindi file alone: IN22 has no English side here
  CUDA_VISIBLE_DEVICES=0 timed table-1gpu "$PY" medusa.py --assignment-table --all-examples -d "$in22" \
    -o "$OUT/table-1gpu"
  timed table-2gpu "${ACC[@]}" medusa.py --assignment-table --all-examples -d "$in22" -o "$OUT/table-2gpu"
  "$PY" - "$OUT" <<'EOF' | tee "$OUT/tables.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
one, two = out / "table-1gpu", out / "table-2gpu"
for row in sorted(p.name for p in one.iterdir() if (p / "predictions.jsonl").exists()):
    a = [json.loads(line) for line in (one / row / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (two / row / "predictions.jsonl").read_text().splitlines()]
    same = sum(x["index"] == y["index"] and x["token_ids"] == y["token_ids"] for x, y in zip(a, b))
    sa, sb = (json.loads((d / row / "summary.json").read_text()) for d in (one, two))
    print(f"{row}: identical {same}/{len(a)} (rows {len(a)} vs {len(b)}); metrics equal: {sa['metrics'] == sb['metrics']}; "
          f"tau {sa['speed']['tokens_per_step']:.3f} vs {sb['speed']['tokens_per_step']:.3f}; "
          f"processes {sa.get('processes')} vs {sb.get('processes')}, gpus {sa.get('gpus')} vs {sb.get('gpus')}")
w1, w2 = (float((out / "logs" / f"table-{n}.wall").read_text()) for n in ("1gpu", "2gpu"))
print(f"wall: one GPU {w1:.1f} s, 2 processes {w2:.1f} s, ratio {w2 / w1:.3f} (both include loading)")
EOF
fi
if wants split7b; then
  in22=$(data in22/gen).hin_Deva
  model=$OUT/rand7b
  [ -f "$model/heads/medusa_heads.json" ] || step make-rand7b "$PY" tools/make_random_model.py --shape llama-2-7b \
    --out "$model"
  common=(-m "$model/heads" -d "$in22" -n 8 -mol 64 --dtype float32 --prompt-style seed --engine eager)
  for s in single-head multi-head tree; do
    CUDA_VISIBLE_DEVICES=0 step "7b-one-$s" "$PY" medusa.py "${common[@]}" -ds "$s" -o "$OUT/7b-one-$s"
    step "7b-split-$s" "$PY" medusa.py "${common[@]}" --device-map auto --max-memory 0=14GiB,1=40GiB -ds "$s" \
      -o "$OUT/7b-split-$s"
  done
  "$PY" - "$OUT" <<'EOF' | tee "$OUT/split7b.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for s in ("single-head", "multi-head", "tree"):
    one, split = out / f"7b-one-{s}", out / f"7b-split-{s}"
    a = [json.loads(line)["token_ids"] for line in (one / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(line)["token_ids"] for line in (split / "predictions.jsonl").read_text().splitlines()]
    sa, sb = (json.loads((d / "summary.json").read_text())["speed"] for d in (one, split))
    ms = [1000 * x["generation_seconds"] / x["decoding_steps"] for x in (sa, sb)]
    print(f"{s}: tokens identical {sum(x == y for x, y in zip(a, b))}/{len(a)}; ms/step one GPU {ms[0]:.2f}, "
          f"split {ms[1]:.2f} ({ms[1] / ms[0]:.2f}x); tau {sa['tokens_per_step']:.3f} vs {sb['tokens_per_step']:.3f}")
EOF
  grep -h "device map:\|note: the model is split" "$OUT"/logs/7b-split-*.log | sort | uniq -c || true
fi
echo "done: $OUT"
