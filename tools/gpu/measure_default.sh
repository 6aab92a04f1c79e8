#!/usr/bin/env bash
# Measures the shipped embedded default (or another drafter folder) on IN22-Gen Hindi (1024 rows) and FLORES-200
# devtest (1012 rows). Subcommands (default: all):
#   acceptance  python medusa.py measure-acceptance: per-head top-1/top-5 accuracy and replayed τ of the model's tree
#               and of the default multi-head grid, every row of both sets, greedy, <= 128 new tokens
#                                                         -> $OUT/acceptance/ (report and JSON)
#   decode      the CLI's real decodes, every row: IN22-Gen with the tree beside single-head (--compare-single-head:
#               τ, tokens/s of both, outputs identical to single-head), FLORES-200 devtest with the tree (sacreBLEU,
#               chrF, τ)                                  -> $OUT/decode-in22-gen/, $OUT/decode-flores200-devtest/
#   speed       the first SPEED_N IN22-Gen rows, each strategy timed beside single-head in its own process: the tree,
#               the tree cut to 31 nodes, multi-head W2 S2 -> $OUT/speed-tree/, speed-tree-31/, speed-mh-w2-s2/
# Every run folder holds summary.json (settings, τ, tokens/s, device, versions) and predictions.jsonl.
# Inputs (environment):
#   DATA=../shared/data     holds in22/gen.hin_Deva and flores200-devtest.* (at the top or under parallel-eng-hin/)
#   MODEL=embedded          embedded, embedded:faithful (the faithful translator and its drafter) or a heads folder
#                           (e.g. results/train_default/embedded_default)
#   OUT=results/measure_default     a new folder (the CLI never overwrites a run); logs/, provenance.json too
#   N=                      first N rows of each set instead of all (a quick check); SPEED_N=50
#   DTYPE=auto              auto decodes this small model in fp32 on CUDA; DTYPE=bfloat16 for the bf16 rows
# Usage:
#   bash tools/gpu/measure_default.sh [acceptance] [decode] [speed] [all]
#   MODEL=embedded:faithful OUT=results/measure_faithful bash tools/gpu/measure_default.sh decode
#   N=20 bash tools/gpu/measure_default.sh acceptance
# Run time on one H100/H200: acceptance about 5 min, decode about 10 min (the IN22-Gen rows decode twice),
# speed about 3 min.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
check_args "acceptance decode speed all" "$@"
OUT=${OUT:-results/measure_default}
MODEL=${MODEL:-embedded} N=${N:-} SPEED_N=${SPEED_N:-50} DTYPE=${DTYPE:-auto}
start_run measure_default

in22=$(data in22/gen).hin_Deva flores=$(data flores200-devtest)  # IN22: the Hindi file alone (no references)
case "$MODEL" in  # the decoding CLI names the shipped translators with --translator
  embedded) cli_model=() ;;
  embedded:faithful) cli_model=(--translator faithful) ;;
  *) cli_model=(-m "$MODEL") ;;
esac
rows=(--all-examples)
some=()
[ -z "$N" ] || { rows=(-n "$N"); some=(-n "$N"); }

if wants acceptance; then
  step acceptance "$PY" medusa.py measure-acceptance --model-name "$MODEL" --dataset "$in22" --dataset "$flores" \
    "${some[@]}" --max-output-len 128 --batch-size 128 --output-dir "$OUT/acceptance"
fi
if wants decode; then
  step decode-in22-gen "$PY" medusa.py "${cli_model[@]}" -ds tree --dtype "$DTYPE" -d "$in22" "${rows[@]}" -mol 128 \
    --compare-single-head -o "$OUT/decode-in22-gen"
  step decode-flores200-devtest "$PY" medusa.py "${cli_model[@]}" -ds tree --dtype "$DTYPE" -d "$flores" "${rows[@]}" \
    -mol 128 -o "$OUT/decode-flores200-devtest"
fi
if wants speed; then
  step speed-tree "$PY" medusa.py "${cli_model[@]}" -ds tree --dtype "$DTYPE" -d "$in22" -n "$SPEED_N" -mol 128 \
    --compare-single-head -o "$OUT/speed-tree"
  step speed-tree-31 "$PY" medusa.py "${cli_model[@]}" -ds tree --tree-size 31 --dtype "$DTYPE" -d "$in22" \
    -n "$SPEED_N" -mol 128 --compare-single-head -o "$OUT/speed-tree-31"
  step speed-mh-w2-s2 "$PY" medusa.py "${cli_model[@]}" -ds multi-head -w 2 -nmh 2 --dtype "$DTYPE" -d "$in22" \
    -n "$SPEED_N" -mol 128 --compare-single-head -o "$OUT/speed-mh-w2-s2"
fi
echo "done: $OUT"
