"""The translator's own greedy text on the drafter's training sources, from which a draft vocabulary
is chosen (medusa/model/draft_vocab.py). Writes ``sequences.jsonl`` as train-heads does (the same
self-distillation code, greedy only, the embedded default's translator unless ``--model-name``;
resumed if the file exists) and prints how much of every tenth sequence's text the N most frequent
tokens of the others cover, for N in 2048 … 16384: the choice of ``tools/pack_embedded_default.py
--draft-vocab N --vocab-text SEQUENCES.jsonl``.

    python tools/vocab_text.py --dataset D/ntrex128 [--dataset ...] --output SEQUENCES.jsonl [-n N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medusa.cli import quiet_libraries  # noqa: E402
from medusa.model.draft_vocab import coverage, frequent_tokens  # noqa: E402
from medusa.model.loader import LoadSettings, load_model  # noqa: E402
from medusa.training.train_heads import TrainSettings, self_distilled_sequences  # noqa: E402

SIZES = (2048, 4096, 8192, 16384)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset", action="append", required=True, help="training sources (repeatable)"
    )
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="the sequences.jsonl to write (resumed if it exists)",
    )
    p.add_argument("--model-name", default="embedded")
    p.add_argument(
        "-n", "--num-examples", type=int, default=None, help="sources per dataset (default: all)"
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--generation-batch-size", type=int, default=256)
    args = p.parse_args()
    quiet_libraries(False)
    model = load_model(LoadSettings(args.model_name, small_fp32=True))
    settings = TrainSettings(
        model_name=args.model_name,
        dataset=args.dataset,
        num_examples=args.num_examples,
        max_new_tokens=args.max_new_tokens,
        generation_batch_size=args.generation_batch_size,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = self_distilled_sequences(model, settings, args.output)
    held, kept = rows[::10], [r for i, r in enumerate(rows) if i % 10]
    vocab = model.lm_head.weight.shape[0]
    tokens = sum(len(r["ids"]) - r["prompt_len"] for r in rows)
    print(f"{len(rows)} sequences, {tokens} generated tokens, "
          f"{len({t for r in rows for t in r['ids'][r['prompt_len']:]})} distinct")
    for size in SIZES:
        if size <= vocab:
            share = coverage(held, frequent_tokens(kept, size, vocab))
            print(
                f"draft vocabulary {size:6d}: {share:.2%} of every tenth sequence's tokens (from"
                " the rest)"
            )


if __name__ == "__main__":
    main()
