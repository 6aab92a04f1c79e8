#!/usr/bin/env bash
# Issue 12 on the nvidia-h200-x2 machine: data-parallel runs (accelerate launch, 2 processes) and one model split over
# 2 GPUs (--device-map auto --max-memory). WRITTEN ON A CPU-ONLY SESSION AND NOT RUN YET: nothing here has been
# measured; docs/benchmarks.md gets the figures when it has run.
#
# Before (one warm machine, calls back to back):
#   1. the embedded model and the wheels, as ../shared/tools/stage-smollm2.sh and device-wheels.sh say;
#   2. the 1024-row IN22-Gen Hindi file, carried in .stage:  mkdir -p .stage/in22 &&
#      cp ../shared/data/in22/gen.hin_Deva .stage/in22/   (carry ".stage/in22"; the name must end in .hin_Deva)
# Then, one call each (every step writes under $R=/root/mg, which survives between calls on a warm machine):
#   bash benchmarks/gpu_multigpu.sh tests      # tests/test_cuda_multi.py + tests/test_cuda.py (< 2 min)
#   bash benchmarks/gpu_multigpu.sh tables     # starts, in the background: the 1024-row table on GPU 0, then under
#                                               # 2 processes (several minutes each: poll with `compare`)
#   bash benchmarks/gpu_multigpu.sh compare    # row-for-row identity, metrics, wall times and their ratio (<= 0.55?)
#   bash benchmarks/gpu_multigpu.sh split7b    # random Llama-2-7B shape, fp32: one GPU vs split over 2 (background)
#   bash benchmarks/gpu_multigpu.sh compare7b  # tokens identical per strategy; ms per decoding step, split vs one
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=${MEDUSA_EMBEDDED_GGUF:-/root/stage/smollm2.gguf} MEDUSA_CACHE=${MEDUSA_CACHE:-/root/medusa-cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
R=${R:-/root/mg}
IN22=${IN22:-.stage/in22/gen.hin_Deva}
mkdir -p "$R"
[ -f "$IN22" ] && cp "$IN22" "$R/gen.hin_Deva"  # the repository copy is replaced at each call: keep one in $R
DATA="$R/gen.hin_Deva"
ACC="accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"

timed() {  # NAME COMMAND...: runs it, writes NAME.log and NAME.wall (exit status, wall seconds)
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" > "$R/$name.log" 2>&1
  local rc=$?
  echo "$rc $(python3 -c "import time; print(round(time.time() - $t0, 1))")" > "$R/$name.wall"
}

case "${1:-}" in
  tests)
    nvidia-smi -L
    timeout 500 python3 -m pytest -q tests/test_cuda_multi.py tests/test_cuda.py 2>&1 | tail -6
    ;;
  tables)
    [ -f "$DATA" ] || { echo "no $DATA: carry .stage/in22 (see the header)"; exit 2; }
    nohup bash -c "
      cd $(pwd)
      $(declare -f timed); R=$R
      CUDA_VISIBLE_DEVICES=0 timed table-1gpu python3 medusa.py --assignment-table --all-examples -d $DATA -o $R/table-1gpu
      timed table-2gpu $ACC medusa.py --assignment-table --all-examples -d $DATA -o $R/table-2gpu
    " > "$R/tables.nohup" 2>&1 &
    echo "started (pid $!): poll with  bash benchmarks/gpu_multigpu.sh compare"
    ;;
  compare)
    for f in "$R"/table-*.wall; do [ -f "$f" ] && echo "$(basename "$f" .wall): exit, wall s = $(cat "$f")"; done
    python3 - "$R" <<'EOF'
import json, sys
from pathlib import Path
r = Path(sys.argv[1])
one, two = r / "table-1gpu", r / "table-2gpu"
if not (two / "table.csv").exists():
    sys.exit("the 2-process table has not finished yet")
for row in sorted(p.name for p in one.iterdir() if (p / "predictions.jsonl").exists()):
    a = [json.loads(l) for l in (one / row / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (two / row / "predictions.jsonl").read_text().splitlines()]
    same = sum(x["index"] == y["index"] and x["token_ids"] == y["token_ids"] for x, y in zip(a, b))
    sa, sb = (json.loads((d / row / "summary.json").read_text()) for d in (one, two))
    print(f"{row}: identical {same}/{len(a)} (rows {len(a)} vs {len(b)}); metrics equal: {sa['metrics'] == sb['metrics']}; "
          f"tau {sa['speed']['tokens_per_step']:.3f} vs {sb['speed']['tokens_per_step']:.3f}; "
          f"processes {sa.get('processes')} vs {sb.get('processes')}, gpus {sa.get('gpus')} vs {sb.get('gpus')}")
w1, w2 = (float((r / f"table-{n}.wall").read_text().split()[1]) for n in ("1gpu", "2gpu"))
print(f"wall: one GPU {w1:.1f} s, 2 processes {w2:.1f} s, ratio {w2 / w1:.3f} (target <= 0.55; both include loading)")
EOF
    ;;
  split7b)
    M=$R/rand7b
    [ -f "$M/heads/medusa_heads.json" ] || timeout 500 python3 benchmarks/make_random_model.py --shape llama-2-7b --out "$M"
    # fp32: ~27 GB; 14 GiB on GPU 0 leaves about half the layers for GPU 1
    COMMON="-m $M/heads -d $DATA -n 8 -mol 64 --dtype float32 --prompt-style seed --engine eager"
    nohup bash -c "
      cd $(pwd)
      $(declare -f timed); R=$R
      for s in single-head multi-head tree; do
        CUDA_VISIBLE_DEVICES=0 timed 7b-one-\$s python3 medusa.py $COMMON -ds \$s -o $R/7b-one-\$s
        timed 7b-split-\$s python3 medusa.py $COMMON --device-map auto --max-memory 0=14GiB,1=40GiB -ds \$s -o $R/7b-split-\$s
      done
    " > "$R/split7b.nohup" 2>&1 &
    echo "started (pid $!): poll with  bash benchmarks/gpu_multigpu.sh compare7b"
    ;;
  compare7b)
    grep -h "device map:\|note: the model is split" "$R"/7b-split-*.log 2>/dev/null | sort | uniq -c
    python3 - "$R" <<'EOF'
import json, sys
from pathlib import Path
r = Path(sys.argv[1])
for s in ("single-head", "multi-head", "tree"):
    one, split = r / f"7b-one-{s}", r / f"7b-split-{s}"
    if not (split / "summary.json").exists():
        print(f"{s}: not finished"); continue
    a = [json.loads(l)["token_ids"] for l in (one / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(l)["token_ids"] for l in (split / "predictions.jsonl").read_text().splitlines()]
    sa, sb = (json.loads((d / "summary.json").read_text())["speed"] for d in (one, split))
    ms = [1000 * x["generation_seconds"] / x["decoding_steps"] for x in (sa, sb)]
    print(f"{s}: tokens identical {sum(x == y for x, y in zip(a, b))}/{len(a)}; ms/step one GPU {ms[0]:.2f}, "
          f"split {ms[1]:.2f} ({ms[1] / ms[0]:.2f}x); tau {sa['tokens_per_step']:.3f} vs {sb['tokens_per_step']:.3f}")
EOF
    ;;
  *)
    sed -n 2,20p "$0"; exit 2 ;;
esac
