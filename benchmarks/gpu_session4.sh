#!/usr/bin/env bash
# The H200 runs of the fourth session (issue 9's grouped attention, issue 12 on one GPU, issue 11's drafters), one
# stage per device call, back to back on one warm machine (files under /root survive between calls while it is warm).
#   call 1: carry .stage/a .whl         bash benchmarks/gpu_session4.sh setup tests
#   call 2: carry .stage/b              bash benchmarks/gpu_session4.sh model bench-fp32
#   call 3: carry .data                 bash benchmarks/gpu_session4.sh data identity bench-7b
# (one call carries at most 64 MiB with the tree: each half of the GGUF is 47 MiB)
#   call 4:                             bash benchmarks/gpu_session4.sh drafters shared-gpu drafters-wait
#                                       (the heads train in the background while the shared-GPU checks run)
#   call 5:                             bash benchmarks/gpu_session4.sh drafters-measure
# Every bench_decode.py run has `generate` with a static cache in the same process; results land in $OUT.
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=/root/stage/smollm2.gguf MEDUSA_CACHE=/root/medusa-cache
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
R=/root/s4
mkdir -p "$OUT" "$R" /root/stage
BENCH="python3 benchmarks/bench_decode.py"
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case "$stage" in
  setup)  # the GGUF's parts this call carries (two halves, or thirds once the tree grew), the wheels the image lacks
    for part in .stage/*/part; do [ -f "$part" ] && cp "$part" "/root/stage/$(basename "$(dirname "$part")")"; done
    [ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    ;;
  data)  # the offline data (../shared/data, plus the newstest2014 head/calibration split of gpu_train_embedded.sh)
    rm -rf /root/data && cp -r .data /root/data
    ;;
  tests)
    timeout 400 python3 -m pytest -q tests/test_cuda.py 2>&1 | tail -8
    ;;
  model)  # the parts carried now joined to those staged by earlier calls, checked
    for part in .stage/*/part; do [ -f "$part" ] && cp "$part" "/root/stage/$(basename "$(dirname "$part")")"; done
    cat $(ls /root/stage/? | sort) > /root/stage/smollm2.gguf
    echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /root/stage/smollm2.gguf" | sha256sum -c
    ;;
  bench-fp32)  # the grouped attention against the model's own (sdpa) in captured steps, and compiled, fp32
    timeout 560 $BENCH --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype float32 \
      --methods hf-static,single-head,tree,tree-31 --engines graphs,graphs-sdpa,compiled \
      --out "$OUT/bench-h200-embedded-attention-fp32.json" 2>&1 | grep -v "it/s\]"
    ;;
  identity)  # the same prompts decoded by the eager loop: outputs of every engine against eager single-head
    timeout 330 $BENCH --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype float32 --rounds 1 \
      --methods single-head,tree,tree-31 --engines eager,graphs,compiled \
      --out "$OUT/bench-h200-embedded-attention-identity.json" 2>&1 | grep -v "it/s\]" | tail -12
    ;;
  bench-7b)  # Llama-2-7B shape, random weights, bf16: single-head step against the floor, tree-63 verify
    timeout 330 $BENCH --model shape:llama-2-7b --methods single-head,tree-63 --engines graphs,graphs-sdpa,compiled \
      --step-costs --rounds 2 --out "$OUT/bench-h200-7b-attention.json" 2>&1 | grep -v "it/s\]"
    ;;
  shared-gpu)  # issue 12 on one GPU: two processes sharing it give the one-process rows; --device-map auto on one GPU
    ACC="accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
    D=${SHARED_DATA:-in22-gen-sample}  # the shipped 20 IN22-Gen rows: no data to carry
    rm -rf "$R"/one "$R"/two "$R"/dm-* "$R"/plain-*
    timeout 200 python3 medusa.py --assignment-table -d "$D" -n 20 -mol 64 -o "$R/one" > "$R/one.log" 2>&1; echo "one: $?"
    timeout 200 $ACC medusa.py --assignment-table -d "$D" -n 20 -mol 64 -o "$R/two" > "$R/two.log" 2>&1; echo "two: $?"
    grep -h "data-parallel" "$R/two.log" | head -2
    python3 - "$R" <<'EOF'
import json, sys
from pathlib import Path
r = Path(sys.argv[1])
one, two = r / "one", r / "two"
rows = sorted(p.name for p in one.iterdir() if (p / "predictions.jsonl").exists())
for row in rows:
    a = [json.loads(l) for l in (one / row / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (two / row / "predictions.jsonl").read_text().splitlines()]
    same = sum(x["index"] == y["index"] and x["token_ids"] == y["token_ids"] for x, y in zip(a, b))
    sa, sb = (json.loads((d / row / "summary.json").read_text()) for d in (one, two))
    print(f"{row}: identical {same}/{len(a)} (rows {len(a)} vs {len(b)}); metrics equal {sa['metrics'] == sb['metrics']}; "
          f"processes {sa.get('processes')} vs {sb.get('processes')}, gpus {sa.get('gpus')} vs {sb.get('gpus')}")
EOF
    for s in single-head tree; do
      timeout 120 python3 medusa.py -ds $s -d "$D" -n 12 -mol 64 --engine eager -o "$R/plain-$s" > /dev/null 2>&1
      timeout 120 python3 medusa.py -ds $s -d "$D" -n 12 -mol 64 --device-map auto -o "$R/dm-$s" > "$R/dm-$s.log" 2>&1
      python3 -c "
import json,sys
a=[json.loads(l)['token_ids'] for l in open('$R/plain-$s/predictions.jsonl')]
b=[json.loads(l)['token_ids'] for l in open('$R/dm-$s/predictions.jsonl')]
print('device-map auto on one GPU, $s: identical', sum(x==y for x,y in zip(a,b)), 'of', len(a))"
      grep -h "device map\|split" "$R/dm-$s.log" | head -2
    done
    tar czf "$OUT/shared-gpu.tgz" -C "$R" one two one.log two.log dm-single-head.log dm-tree.log
    ;;
  drafters)  # issue 11: the three drafters on the shipped adapter, the same self-distilled data (background)
    mkdir -p /root/run && rm -rf /root/run/adapter && cp -r medusa/embedded_default/adapter /root/run/adapter
    cp benchmarks/gpu_train_embedded.sh /root/train.sh
    nohup env RUN=/root/run OUT=$OUT D=/root/data VARIANTS="token seq ar" HEAD_EPOCHS=${HEAD_EPOCHS:-4} \
      bash /root/train.sh heads > /root/run/heads.log 2>&1 &
    echo "training in the background (pid $!), log /root/run/heads.log"
    ;;
  drafters-wait)  # until the training ends or $WAIT seconds pass
    for _ in $(seq "$(( ${WAIT:-300} / 10 ))"); do pgrep -f "train.sh heads" > /dev/null || break; sleep 10; done
    grep -v "it/s\]\|s/it\]" /root/run/heads.log | tail -25
    ;;
  drafters-measure)
    while pgrep -f "train.sh heads" > /dev/null; do sleep 10; done; tail -5 /root/run/heads.log
    RUN=/root/run OUT=$OUT D=/root/data VARIANTS="token seq ar" MEASURE_N=${MEASURE_N:-200} TREE_SIZE=127 \
      timeout 500 bash benchmarks/gpu_train_embedded.sh measure 2>&1 | tail -30
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
