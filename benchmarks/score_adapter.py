"""Score a saved LoRA adapter (merged into the embedded base) on a held-out set: sacreBLEU, chrF and BLEU-1, batched
greedy, prompts up to 1000 tokens as the CLI's default; every translation is written beside the scores.

    python benchmarks/score_adapter.py ADAPTER_DIR .data/flores200-devtest [N] [PREDICTIONS.jsonl]
"""

import json
import sys
from pathlib import Path

from medusa.training.finetune import FinetuneSettings, score
from medusa.model.loader import LoadSettings, load_model
from medusa.model import stop_token_ids

adapter, data = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else None
predictions = Path(sys.argv[4]) if len(sys.argv) > 4 else None
model = load_model(LoadSettings(adapter=adapter, embedded_extras=False))
s = FinetuneSettings(eval_data=data, eval_examples=n)
eos = sorted(stop_token_ids(model.tokenizer, model.base_model))
result = score(model.base_model, model.tokenizer, s, eos, predictions)
print(json.dumps(result, indent=2, ensure_ascii=False))
