#!/usr/bin/env bash
# GPU acceptance and wall-clock speed of the SHIPPED embedded default (adapter + token-input heads + tree), on the
# device (H200). Same setup as gpu_train_embedded.sh: GGUF at /root/stage/smollm2.gguf, the wheels of .whl/
# installed, .data/ holding in22/gen.hin_Deva and flores200-devtest (copies of ../shared/data).
#   bash benchmarks/gpu_speed_embedded.sh tau     # replayed greedy tau (bf16) for the 63/127/255-node trees + W x S grid
#   bash benchmarks/gpu_speed_embedded.sh speed   # real decodes, each timed beside single-head in the same process
# Results go to $RUN/shipped-* and, packed, to $OUT/shipped-*.tgz. Docs: docs/embedded-default.md ("Speed on the
# GPU"), raw: docs/measured/speed-h200-shipped.json and acceptance-h200-shipped-tree-sizes.*. Staging (three calls,
# data under /root/data): see the header of gpu_train_embedded.sh.
set -euo pipefail
export MEDUSA_EMBEDDED_GGUF=${MEDUSA_EMBEDDED_GGUF:-/root/stage/smollm2.gguf} MEDUSA_CACHE=${MEDUSA_CACHE:-/root/medusa-cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
RUN=${RUN:-/root/run} OUT=${OUT:-/tmp/out} D=${D:-.data} SPEED_N=${SPEED_N:-50} MEASURE_N=${MEASURE_N:-}
mkdir -p "$RUN" "$OUT"
TREES="docs/measured/tree-63-token-heads.json medusa/embedded_default/tree.json docs/measured/tree-255-token-heads.json"
DTYPE=${DTYPE:-auto}  # auto decodes this small model in fp32 on CUDA; DTYPE=bfloat16 gives the bf16 rows
quiet() { if [ -n "${LOG_ALL:-}" ]; then cat; else grep -v -E 'it/s\]|s/it\]|ex/s\]|^\s*$' || true; fi; }

case "${1:-}" in
tau)
  args=(); for t in $TREES; do args+=(--tree "$t"); done
  n=(); [ -n "$MEASURE_N" ] && n=(--num-examples "$MEASURE_N")
  python3 medusa.py measure-acceptance "${args[@]}" --dataset $D/in22/gen --dataset $D/flores200-devtest "${n[@]}" \
    --batch-size 128 --output-dir "$RUN/shipped-acceptance" 2>&1 | quiet
  tar czf "$OUT/shipped-acceptance.tgz" -C "$RUN" shipped-acceptance
  ;;
speed)
  # one process per strategy; every one decodes the same first $SPEED_N IN22-Gen rows twice (Medusa, single-head)
  runs=()
  for t in $TREES; do
    name=speed-$DTYPE-tree-$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['paths']))" "$t")
    python3 medusa.py -ds tree --tree "$t" --dtype "$DTYPE" --compare-single-head -d $D/in22/gen -n "$SPEED_N" -mol 128 \
      -o "$RUN/shipped-$name" 2>&1 | quiet | tail -6 || echo "failed: $name"  # keep the runs done so far
    [ -f "$RUN/shipped-$name/summary.json" ] && runs+=("shipped-$name")
  done
  for ws in "2 2" "5 2" "2 5"; do
    set -- $ws
    python3 medusa.py -ds multi-head -w "$1" -nmh "$2" --dtype "$DTYPE" --compare-single-head -d $D/in22/gen -n "$SPEED_N" -mol 128 \
      -o "$RUN/shipped-speed-$DTYPE-mh-w$1-s$2" 2>&1 | quiet | tail -6 || echo "failed: mh-w$1-s$2"
    [ -f "$RUN/shipped-speed-$DTYPE-mh-w$1-s$2/summary.json" ] && runs+=("shipped-speed-$DTYPE-mh-w$1-s$2")
  done
  tar czf "$OUT/shipped-speed.tgz" -C "$RUN" "${runs[@]}"
  ;;
*)
  echo "usage: $0 tau|speed" >&2
  exit 2
  ;;
esac
