#!/usr/bin/env bash
# The speed tables: tools/bench_decode.py decodes the same prompts with transformers `generate` (static cache) and
# our strategies under the fast engines in one process, and reports tokens/s, ms per step, τ, every ratio against
# `generate` static and our single-head, outputs identical to eager single-head, and the captured steps' costs.
# Subcommands (default: all = embedded 7b 1b), each one JSON record (command, GPU, versions, commit, date):
#   embedded    the shipped default (MODEL), fp32, 20 in22-gen-sample prompts, <= 128 new tokens: generate static,
#               single-head, the 127-node tree and the tree cut to 31 nodes; engines graphs and compiled; step costs
#               with the kernel profile of each captured step and drafting      -> $OUT/bench-embedded.json
#   7b          random weights of the Llama-2-7B shape, bf16, identity heads: generate static, single-head and the
#               63-node built-in tree under graphs and compiled; Medusa tokens/s projected from PROJECT_TAU
#                                                                               -> $OUT/bench-7b.json
#   1b          the same on the Llama-3.2-1B shape                              -> $OUT/bench-1b.json
#   sampling    the shipped default, fp32, 30 flores200-sample rows, <= 128 new tokens: generate sampling with a static
#               cache, our single-head sampling and the shipped tree's speculative sampling at T = 0, 0.3, 0.7, 1.0,
#               and typical acceptance at eps = 0.01, 0.03, 0.09, 0.3 (alpha = sqrt(eps)) at T = 0.7; chrF beside
#               each (tools/bench_sampling.py; TEMPERATURES, EPSILONS override)
#                                                                               -> $OUT/bench-sampling.json, .png
#   batch       the shipped default, fp32, the 50 in22-gen-sample prompts, <= 128 new tokens, at batch sizes 1, 4,
#               16, 32 (BATCH_SIZES): generate with a static cache on left-padded batches against our batched
#               single-head and tree (continuous refill); throughput, per-row latency, τ
#               (tools/bench_decode.py --batch-sizes)                             -> $OUT/bench-batch.json
#               and the Llama-2-7B shape, bf16, identity heads, 32 prompts of 160 tokens, <= 64 new tokens
#               (Medusa tokens/s projected from PROJECT_TAU)                      -> $OUT/bench-batch-7b.json
#   7b-profile  the 7B shape's single-head step and 63-node verify under compiled and compiled-tuned (inductor's
#               coordinate-descent tuning), with their kernel profiles          -> $OUT/bench-7b-profile.json
# Inputs (environment):
#   OUT=results/bench     logs/ and provenance.json go here too
#   MODEL=embedded        for `embedded`: embedded, embedded:faithful or a heads folder
#   ENGINES, METHODS      override the subcommand's engines / methods (comma lists, as tools/bench_decode.py takes)
#   ROUNDS=2              timed rounds (medians are reported)
#   PROJECT_TAU=3.116     the shipped drafter's τ on all 1024 IN22-Gen rows (H200, fp32, graphs engine)
# Usage:
#   bash tools/gpu/bench.sh [embedded] [7b] [1b] [sampling] [batch] [7b-profile] [all]
#   MODEL=embedded:faithful OUT=results/bench-faithful bash tools/gpu/bench.sh embedded
#   ENGINES=eager,graphs bash tools/gpu/bench.sh 1b
# Run time on one H100/H200: embedded about 6 min (compiling takes most), 7b about 4 min, 1b about 3 min, sampling
# about 8 min, batch about 10 min, 7b-profile about 6 min (four compiles).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
check_args "embedded 7b 1b sampling batch 7b-profile all" "$@"
OUT=${OUT:-results/bench}
MODEL=${MODEL:-embedded} ROUNDS=${ROUNDS:-2} PROJECT_TAU=${PROJECT_TAU:-3.116}
start_run bench

bench() {  # NAME DEFAULT_METHODS DEFAULT_ENGINES ARGS...
  local name=$1 methods=${METHODS:-$2} engines=${ENGINES:-$3}
  shift 3
  step "$name" "$PY" tools/bench_decode.py "$@" --methods "$methods" --engines "$engines" --rounds "$ROUNDS" \
    --out "$OUT/$name.json"
}

if wants embedded; then
  bench bench-embedded hf-static,single-head,tree,tree-31 graphs,compiled --model "$MODEL" -d in22-gen-sample \
    -n 20 -mol 128 --dtype float32 --step-costs --profile
fi
if wants 7b; then
  bench bench-7b hf-static,single-head,tree graphs,compiled --model shape:llama-2-7b --step-costs \
    --project-tau "$PROJECT_TAU"
fi
if wants 1b; then
  bench bench-1b hf-static,single-head,tree graphs,compiled --model shape:llama-3.2-1b --step-costs \
    --project-tau "$PROJECT_TAU"
fi
if wants sampling; then
  step bench-sampling "$PY" tools/bench_sampling.py --model "$MODEL" -n 30 -mol 128 --rounds "$ROUNDS" \
    --temperatures "${TEMPERATURES:-0,0.3,0.7,1.0}" --epsilons "${EPSILONS:-0.01,0.03,0.09,0.3}" \
    --out "$OUT/bench-sampling.json"
fi
if wants batch; then
  step bench-batch "$PY" tools/bench_decode.py --model "$MODEL" -d in22-gen-sample -n 50 -mol 128 \
    --dtype float32 --batch-sizes "${BATCH_SIZES:-1,4,16,32}" --methods "${METHODS:-hf-static,single-head,tree}" \
    --rounds "$ROUNDS" --out "$OUT/bench-batch.json"
  step bench-batch-7b "$PY" tools/bench_decode.py --model shape:llama-2-7b -n 32 \
    --batch-sizes "${BATCH_SIZES:-1,4,16,32}" --methods "${METHODS:-hf-static,single-head,tree}" \
    --project-tau "$PROJECT_TAU" --rounds "$ROUNDS" --out "$OUT/bench-batch-7b.json"
fi
if [[ " ${STAGES[*]} " == *" 7b-profile "* ]]; then  # not part of all
  ROUNDS=1 bench bench-7b-profile single-head,tree-63 compiled,compiled-tuned --model shape:llama-2-7b --step-costs \
    --profile
fi
echo "done: $OUT"
