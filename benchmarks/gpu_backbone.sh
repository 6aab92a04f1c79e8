#!/usr/bin/env bash
# The GPU checks of the backbone, as run on the device (H200). Expects the embedded GGUF at
# /root/stage/smollm2.gguf (see ../shared/tools/stage-smollm2.sh) and the wheels of .whl/ installed.
# Writes logs and result files under $OUT.
set -uo pipefail
export MEDUSA_EMBEDDED_GGUF=/root/stage/smollm2.gguf MEDUSA_CACHE=/root/medusa-cache PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 -m pytest -q tests/test_cuda.py tests/test_decoding_single_head.py tests/test_decoding_verify.py 2>&1 | tail -3
python3 medusa.py --bare-embedded --dtype bfloat16 -o "$OUT/gpu-embedded-flores" 2>&1 | grep -v -E '^\s*$|it/s\]' | tail -12
python3 medusa.py --bare-embedded --dtype bfloat16 -d in22-gen-sample -o "$OUT/gpu-embedded-in22" 2>&1 | tail -8
python3 benchmarks/single_head_vs_generate.py -n 20 2>&1 | tail -4
