"""Score a saved LoRA adapter, merged into its base (the embedded SmolLM2 unless ``--model-name``),
on a held-out set: sacreBLEU, chrF and BLEU-1 of batched greedy translations, prompts up to 1000
tokens as the CLI's default. Prints the scores as JSON; with a fourth argument every translation is
written there too.

    python tools/score_adapter.py ADAPTER_DIR DATA/flores200-devtest [N] [PREDICTIONS.jsonl]
    [--model-name BASE]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medusa.training.finetune import FinetuneSettings, score  # noqa: E402
from medusa.model.loader import LoadSettings, load_model  # noqa: E402
from medusa.model import stop_token_ids  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapter", help="a finetune output folder (peft adapter)")
    p.add_argument(
        "data",
        help="held-out data: a built-in name or a path prefix (NAME.hin_Deva + NAME.eng_Latn)",
    )
    p.add_argument("n", nargs="?", type=int, default=None, help="first N rows (default: all)")
    p.add_argument(
        "predictions", nargs="?", type=Path, default=None, help="JSONL file for every translation"
    )
    p.add_argument(
        "--model-name", default="embedded", help="the base the adapter was trained on (embedded)"
    )
    a = p.parse_args()
    model = load_model(LoadSettings(a.model_name, adapter=a.adapter, embedded_extras=False))
    s = FinetuneSettings(model_name=a.model_name, eval_data=a.data, eval_examples=a.n)
    eos = sorted(stop_token_ids(model.tokenizer, model.base_model))
    result = score(model.base_model, model.tokenizer, s, eos, a.predictions)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
