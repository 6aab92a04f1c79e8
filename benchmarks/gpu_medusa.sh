#!/usr/bin/env bash
# GPU checks of the Medusa strategies on the embedded default (untrained identity heads: tau ~ 1 is expected),
# each beside single-head in the same process (--compare-single-head): tokens/s, tau, speedup and how many bf16
# outputs differ from single-head. Same setup as gpu_backbone.sh (GGUF at /root/stage/smollm2.gguf, wheels).
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=/root/stage/smollm2.gguf MEDUSA_CACHE=/root/medusa-cache PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
part=${1:-all}
if [ "$part" = all ] || [ "$part" = 1 ]; then
  python3 -m pytest -q tests/test_cuda.py tests/test_decoding_multi_head.py tests/test_decoding_tree.py 2>&1 | tail -2
  python3 medusa.py --bare-embedded --dtype bfloat16 -ds multi-head -w 2 -nmh 2 --compare-single-head -o "$OUT/gpu-mh-w2-s2" 2>&1 | grep -v 'ex/s' | tail -9
fi
if [ "$part" = all ] || [ "$part" = 2 ]; then
  python3 medusa.py --bare-embedded --dtype bfloat16 -ds tree --tree builtin -nmh 4 --compare-single-head -o "$OUT/gpu-tree4" 2>&1 | grep -v 'ex/s' | tail -9
  python3 medusa.py --bare-embedded --dtype bfloat16 -ds multi-head -w 5 -nmh 5 --compare-single-head -n 20 -o "$OUT/gpu-mh-w5-s5" 2>&1 | grep -v 'ex/s' | tail -9
fi
