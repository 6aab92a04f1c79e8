#!/usr/bin/env bash
# SUPERSEDED by gpu_session6.sh (run) and gpu_session7.sh (planned); kept as the plan it was, never run as a whole.
# Calls back to back on one warm machine (files under /root survive while it is warm; see gpu_session4.sh):
#   call 1: carry .stage/a .whl   bash benchmarks/gpu_session5.sh setup tests
#   call 2: carry .stage/b        bash benchmarks/gpu_session5.sh model
#   call 3: carry .data           bash benchmarks/gpu_session5.sh data drafters drafters-wait
#           (.data as gpu_session4.sh says; the three drafters train in the background, the call waits for them)
#   call 4:                       bash benchmarks/gpu_session5.sh tau-all        (all 1024 IN22-Gen + 1012 FLORES rows)
#   call 5:                       bash benchmarks/gpu_session5.sh bench-drafters blas-ab   (timings: nothing else runs)
#   call 6, 7:                    bash benchmarks/gpu_session5.sh translator translator-wait; then translator-wait
#           (the LoRA translator trains last, in the background, so that no timing shares the GPU with it)
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=/root/stage/smollm2.gguf MEDUSA_CACHE=/root/medusa-cache
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
RUN=/root/run
mkdir -p "$OUT" "$RUN" /root/stage
BENCH="python3 benchmarks/bench_decode.py"
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case "$stage" in
  setup|tests|model|data)
    bash benchmarks/gpu_session4.sh "$stage"
    ;;
  drafters)  # the three drafters on the shipped adapter and the same self-distilled text (as in session 4)
    rm -rf "$RUN/adapter" && cp -r medusa/embedded_default/adapter "$RUN/adapter"
    cp benchmarks/gpu_train_embedded.sh /root/train.sh
    nohup env RUN=$RUN OUT=$OUT D=/root/data VARIANTS="token seq ar" HEAD_EPOCHS=${HEAD_EPOCHS:-6} \
      bash /root/train.sh heads > "$RUN/heads.log" 2>&1 &
    ;;
  translator)  # a larger LoRA for chrF (issue 11's target 25), scored on FLORES-200 devtest before and after
    cp benchmarks/gpu_train_embedded.sh /root/train.sh
    nohup env RUN=/root/ft OUT=$OUT D=/root/data FT_EPOCHS=${FT_EPOCHS:-4} FT_RANK=${FT_RANK:-32} \
      bash /root/train.sh finetune > /root/ft.log 2>&1 &
    ;;
  drafters-wait)
    for _ in $(seq "$(( ${WAIT:-400} / 10 ))"); do pgrep -f "train.sh heads" > /dev/null || break; sleep 10; done
    grep -v "it/s\]\|s/it\]" "$RUN/heads.log" | tail -12
    ;;
  tau-all)  # τ on every row: calibrated trees, the token heads replayed, the autoregressive drafter decoded
    RUN=$RUN OUT=$OUT D=/root/data VARIANTS="token ar" TREE_SIZE=127 timeout 560 \
      bash benchmarks/gpu_train_embedded.sh measure 2>&1 | grep -v "it/s\]" | tail -30
    ;;
  bench-drafters)  # one process per drafter, each with generate static and single-head: tokens/s, drafting share
    for v in token ar; do
      timeout 250 $BENCH --model "$RUN/heads-$v" --tree "$RUN/tree-$v.json" -d in22-gen-sample -n 20 -mol 128 \
        --dtype float32 --methods hf-static,single-head,tree,tree-31 --engines graphs --step-costs \
        --out "$OUT/bench-h200-drafter-$v.json" 2>&1 | grep -v "it/s\]" | tail -14
    done
    ;;
  blas-ab)  # issue 9: do cuBLASLt's kernels serve the verify's skinny fp32 GEMMs better? (global per process:
            # compare each process's tree ÷ single-head ratio, not tokens/s across processes)
    for blas in cublas cublaslt; do
      timeout 200 $BENCH --model embedded -d in22-gen-sample -n 20 -mol 128 --dtype float32 --blas $blas \
        --methods hf-static,single-head,tree-31 --engines graphs --step-costs \
        --out "$OUT/bench-h200-blas-$blas.json" 2>&1 | grep -v "it/s\]" | tail -9
    done
    ;;
  translator-wait)
    for _ in $(seq "$(( ${WAIT:-500} / 10 ))"); do pgrep -f "train.sh finetune" > /dev/null || break; sleep 10; done
    grep -v "it/s\]\|s/it\]" /root/ft.log | tail -15
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
