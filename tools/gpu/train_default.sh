#!/usr/bin/env bash
# Rebuilds the embedded default (translator LoRA + autoregressive drafter + calibrated tree + draft vocabulary) from
# the data folder, with the settings recorded in medusa/embedded_default/medusa_heads.json. Subcommands, run in this
# order (default: all):
#   translator  python medusa.py finetune: a rank-8 LoRA on NTREX-128, TICO-19 test, Tatoeba test and newstest2014,
#               scored on FLORES-200 devtest before and after             -> $OUT/translator/ (finetune_report.json)
#   drafter     python medusa.py train-heads: the autoregressive drafter on that translator's own text (greedy + 2
#               sampled continuations per source, relabelled greedy targets, feature loss 1.0) over the same sources,
#               newstest2014 rows 1-2007 only                               -> $OUT/heads/ (its adapter/ beside)
#   tree        python medusa.py calibrate-tree: a 127-node tree calibrated on newstest2014 rows 2008-2507
#                                                                           -> $OUT/tree.json
#   vocab       python tools/vocab_text.py: the translator's greedy text on the drafter's sources
#                                                                           -> $OUT/vocab/sequences.jsonl
#   pack        python tools/pack_embedded_default.py: fp16 drafter with its 8,192-token draft vocabulary, adapter,
#               tree and the commands run (with commit, GPU and date) in medusa_heads.json   -> $TARGET
# Inputs (environment):
#   DATA=../shared/data   holds ntrex128, tico19-test, tatoeba-test-v2021-08-07, newstest2014 and flores200-devtest
#                         (NAME.hin_Deva + NAME.eng_Latn, at the top or under parallel-eng-hin/); the newstest2014
#                         split is written to $OUT/data/. FLORES-200 devtest and IN22 are never trained on.
#   OUT=results/train_default            a new folder per rebuild; logs/ (each step's output and command), provenance.json
#   TRANSLATOR=$OUT/translator           the adapter the drafter is trained on; TRANSLATOR=medusa/embedded_default/adapter
#                                        with `drafter tree vocab pack` keeps the shipped translator
#   TRANSLATOR_ARGS="--rank 8 --alpha 16 --epochs 2 --lr 1e-3 --batch-size 64 --max-input-len 256"  (the shipped one;
#                                        the faithful translator: "--rank 32 --alpha 64 --epochs 5 --lr 2e-3
#                                        --batch-size 64 --no-score-before")
#   TARGET=$OUT/embedded_default         TARGET=medusa/embedded_default replaces the package's default
#   VOCAB=8192  VOCAB_BATCH=512          draft vocabulary size; generation batch of tools/vocab_text.py
#   PYTHON=python3; MEDUSA_EMBEDDED_GGUF, MEDUSA_CACHE as for the CLI (tools/gpu/setup.sh checks them)
# Usage:
#   bash tools/gpu/train_default.sh [translator] [drafter] [tree] [vocab] [pack] [all]
#   DATA=../shared/data OUT=results/train_default bash tools/gpu/train_default.sh
#   TRANSLATOR=medusa/embedded_default/adapter bash tools/gpu/train_default.sh drafter tree vocab pack
# Run time on one H100/H200: translator about 5 min (2 min 3 s of training on an H200 plus both FLORES scorings),
# drafter about 9 min, tree 1-2 min, vocab a few minutes, pack seconds. The shipped vocabulary came from the first
# 3,072 of these sequences (its run stopped out of GPU memory at a generation batch of 1536); this recipe writes all.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
check_args "translator drafter tree vocab pack all" "$@"
OUT=${OUT:-results/train_default}
TRANSLATOR=${TRANSLATOR:-$OUT/translator}
TRANSLATOR_ARGS=${TRANSLATOR_ARGS:---rank 8 --alpha 16 --epochs 2 --lr 1e-3 --batch-size 64 --max-input-len 256}
TARGET=${TARGET:-$OUT/embedded_default}
VOCAB=${VOCAB:-8192} VOCAB_BATCH=${VOCAB_BATCH:-512}
HEADS=$OUT/heads
start_run train_default

ntrex=$(data ntrex128) tico=$(data tico19-test) tatoeba=$(data tatoeba-test-v2021-08-07)
news=$(data newstest2014) flores=$(data flores200-devtest)
mkdir -p "$OUT/data"
for lang in hin_Deva eng_Latn; do  # the drafter trains on rows 1-2007; the tree is calibrated on the last 500
  head -n 2007 "$news.$lang" > "$OUT/data/newstest2014-heads.$lang"
  tail -n 500 "$news.$lang" > "$OUT/data/newstest2014-calib.$lang"
done
sources=(--dataset "$ntrex" --dataset "$tico" --dataset "$tatoeba" --dataset "$OUT/data/newstest2014-heads")

if wants translator; then
  # shellcheck disable=SC2086  # TRANSLATOR_ARGS is a list of flags
  step translator "$PY" medusa.py finetune --train-data "$ntrex" --train-data "$tico" --train-data "$tatoeba" \
    --train-data "$news" --eval-data "$flores" --eval-examples 1012 $TRANSLATOR_ARGS --output-dir "$OUT/translator"
fi
if wants drafter; then
  step drafter "$PY" medusa.py train-heads --adapter "$TRANSLATOR" "${sources[@]}" --max-new-tokens 128 \
    --generation-batch-size 1536 --samples-per-source 2 --sample-temperature 0.7 --num-heads 5 --batch-size 4096 \
    --lr 2e-3 --eval-every 100000 --relabel-greedy --feature-loss-weight 1.0 --epochs 3 --drafter autoregressive \
    --output-dir "$HEADS"
fi
if wants tree; then
  step tree "$PY" medusa.py calibrate-tree --model-name "$HEADS" --dataset "$OUT/data/newstest2014-calib" \
    --num-examples 500 --max-output-len 128 --batch-size 128 --tree-size 127 --output "$OUT/tree.json"
fi
if wants vocab; then  # the translator's greedy text: the heads folder loads the base with its adapter
  step vocab "$PY" tools/vocab_text.py "${sources[@]}" --model-name "$HEADS" --output "$OUT/vocab/sequences.jsonl" \
    --generation-batch-size "$VOCAB_BATCH"
fi
if wants pack; then
  record="translator: $TRANSLATOR; "  # the commands that made these files, as run, then where
  if [ "$TRANSLATOR" = "$OUT/translator" ] && [ -f "$OUT/logs/translator.command" ]; then
    record="translator: $(cat "$OUT/logs/translator.command"); "
  fi
  for s in drafter tree vocab; do
    [ ! -f "$OUT/logs/$s.command" ] || record+="$s: $(cat "$OUT/logs/$s.command"); "
  done
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  record+="tools/gpu/train_default.sh on ${gpu:-no GPU}, commit $GIT_COMMIT, $(date +%F)"
  step pack "$PY" tools/pack_embedded_default.py "$HEADS" "$OUT/tree.json" --target "$TARGET" --draft-vocab "$VOCAB" \
    --vocab-text "$OUT/vocab/sequences.jsonl" --command "$record"
fi
echo "done: $OUT (packed default: $TARGET)"
