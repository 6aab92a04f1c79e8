#!/usr/bin/env bash
# Issue 11: does the context drafter (`--drafter context`: the autoregressive drafter's layer attending over the whole
# context through its own cache, as EAGLE's does) win back the τ that the rank-32 candidate translator's faithful
# text cost? Trained on greedy self-distilled text as session 6's autoregressive drafter (held-out top-1 0.346 /
# 0.274 / 0.249 / 0.229 / 0.214, τ 1.907 on all IN22-Gen rows), but with session 7's batch 4096 and lr 2e-3 (session 6:
# batch 1024, lr 1e-3, 5 epochs, 895 steps).
# RUN 2026-11-29 on one H200 (what happened, in order):
#   calls 1-2 as below; call 3 `WAIT=330 ... data translator heads tests wait-heads`: tests passed (3, the context
#     drafter captured included); the drafter's training failed at once (a bf16 base fed float32 embeddings: fixed
#     in 8a82a84, with a test);
#   call 4 `WAIT=250 ... heads wait-heads`: 5 epochs, 240 steps, 70 s with the text: top-1 0.259 / 0.225 / 0.217 /
#     0.209 / 0.200;
#   call 5 (inline): the same text, 15 epochs, with and without --feature-loss-weight 1.0, side by side (3 min 55 s):
#       source benchmarks/gpu_common.sh; for v in ctx15 ctx15f; do mkdir -p $RUN/heads-$v && \
#         cp $RUN/heads-ctx/sequences.* $RUN/heads-$v/; done
#       common=(the `heads` stage's flags with --epochs 15)
#       detach $RUN/heads-ctx15.log python3 medusa.py train-heads "${common[@]}" --output-dir $RUN/heads-ctx15
#       detach $RUN/heads-ctx15f.log python3 medusa.py train-heads "${common[@]}" --feature-loss-weight 1.0 \
#         --output-dir $RUN/heads-ctx15f
#     top-1 0.339 / 0.267 / 0.240 / 0.219 / 0.201 and 0.348 / 0.279 / 0.257 / 0.240 / 0.222;
#   call 6: calibrate-tree for heads-ctx15f (300 prompts) timed out at its 70 s limit with the device time left;
#     `measure` below was never reached. docs/embedded-default.md, "Sampled text and a context drafter".
# Calls back to back on one warm machine (given back after 30 s idle):
#   call 1: carry .stage/a .whl                      bash benchmarks/gpu_session8.sh setup
#   call 2: carry .stage/b                           bash benchmarks/gpu_session8.sh model
#   call 3: carry .datatxz .cand/translator-r32      WAIT=420 bash benchmarks/gpu_session8.sh data translator heads \
#                                                      tests wait-heads
#   call 4:                                          WAIT=300 WAIT_MEASURE=5 bash benchmarks/gpu_session8.sh \
#                                                      wait-heads measure wait-measure
#   call 5 (repeat until its files come back):       WAIT_MEASURE=540 bash benchmarks/gpu_session8.sh wait-measure
set -uo pipefail
source benchmarks/gpu_common.sh
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  ( case "$stage" in
  setup|model|data)
    bash benchmarks/gpu_session7.sh "$stage"
    ;;
  translator)
    bash benchmarks/gpu_session7.sh translator
    ;;
  heads)
    detach "$RUN/heads-ctx.log" python3 medusa.py train-heads --adapter "$RUN/adapter" --dataset $D/ntrex128 \
      --dataset $D/tico19-test --dataset $D/tatoeba-test-v2021-08-07 --dataset $D/newstest2014-heads \
      --max-new-tokens 128 --generation-batch-size 1536 --num-heads 5 --epochs 5 --batch-size 4096 --lr 2e-3 \
      --eval-every 100000 --drafter context --output-dir "$RUN/heads-ctx" ${HEADS_EXTRA:-}
    ;;
  tests)  # the captured step with each path-dependent drafter, the context drafter's cache included
    timeout 200 python3 -m pytest -q tests/test_cuda.py -k "path_dependent" 2>&1 | tail -4
    ;;
  wait-heads)
    wait_for "train-heads.*heads-ctx" "${WAIT:-300}"; done_now=$?
    quiet < "$RUN/heads-ctx.log" | tail -5
    [ $done_now = 0 ] && grep -q "saved heads" "$RUN/heads-ctx.log" || exit 1
    ;;
  measure)  # detached: a calibrated 127-node tree, then IN22-Gen decoded in full (graphs engine, compared with
            # single-head) and FLORES-200 devtest replayed
    rm -rf "$RUN/out" && detach "$RUN/measure.log" env OUT="$RUN/out" bash benchmarks/gpu_session8.sh measure-run
    ;;
  measure-run)
    mkdir -p "$OUT"
    python3 medusa.py calibrate-tree --model-name "$RUN/heads-ctx" --dataset $D/newstest2014-calib \
      --num-examples ${CALIB_N:-500} --max-output-len 128 --batch-size 128 --tree-size 127 \
      --output "$RUN/tree-ctx.json" > "$RUN/calib-ctx.log" 2>&1 || exit 1
    rows=(--all-examples); some=(); [ -n "${MEASURE_N:-}" ] && rows=(-n "$MEASURE_N") some=(-n "$MEASURE_N")
    nohup python3 medusa.py measure-acceptance --model-name "$RUN/heads-ctx" --tree "$RUN/tree-ctx.json" \
      --multi-head 2:2 "${some[@]}" --dataset $D/flores200-devtest --batch-size 128 \
      --output-dir "$RUN/acceptance-ctx" > "$RUN/acceptance-ctx.log" 2>&1 &
    timeout 480 python3 medusa.py --model-name "$RUN/heads-ctx" -ds tree --tree "$RUN/tree-ctx.json" -d $D/in22/gen \
      "${rows[@]}" -mol 128 --compare-single-head -o "$RUN/decode-ctx-in22-gen" 2>&1 | quiet | tail -12
    wait
    quiet < "$RUN/acceptance-ctx.log" | tail -6
    tar czf "$OUT/measure-ctx.tgz" -C "$RUN" tree-ctx.json calib-ctx.log acceptance-ctx decode-ctx-in22-gen \
      heads-ctx.log
    tar czf "$OUT/heads-ctx.tgz" -C "$RUN" --exclude=sequences.jsonl --exclude=checkpoint.pt --exclude=adapter \
      heads-ctx
    ;;
  wait-measure)
    bring_measurement "gpu_session8.sh measure-run" 24
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac ) || { echo "=== $stage failed: the stages after it are not run"; exit 1; }
done
