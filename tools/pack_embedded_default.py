"""Pack trained heads (with the adapter they were trained on) and their calibrated tree as the
embedded default.

    python tools/pack_embedded_default.py HEADS_DIR TREE.json --command "how they were made"
    [--target DIR]
        [--draft-vocab N --vocab-text SEQUENCES.jsonl] [--adapter ADAPTER_DIR] [--int8
        heads|adapter|both]

The heads' weights are written in float16 (half the bytes; they load into the model's dtype) and the
adapter is copied as saved (``finetune`` writes float16); with ``--int8 heads|adapter|both`` those
are stored row-wise in int8 instead (half again: medusa/model/int8_weights.py; dequantised at load,
so decoding costs the same). Inputs that were packed in int8 before are read as floats first (an
adapter is copied as saved unless ``--int8`` names it). ``--adapter`` names the translator when it
is not the heads' own ``adapter/`` folder. ``medusa_heads.json`` names the adapter and tree beside
it, keeps the training record with dataset paths cut to their names, and records ``--command``. The
files replace those in ``--target`` (default: the package's ``medusa/embedded_default``; never the
folder being packed). ``--draft-vocab N`` stores the N tokens most frequent in ``--vocab-text`` (a
``sequences.jsonl`` of the translator's own text, as train-heads writes) as the drafter's draft
vocabulary (medusa/model/draft_vocab.py), replacing one the heads hold. Prints each file's size and
the total, flagged when it exceeds the 25 MB budget of the package's shipped files.
tools/gpu/train_default.sh runs it after training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from medusa.evaluation.results import read_predictions  # noqa: E402
from medusa.model.draft_vocab import frequent_tokens  # noqa: E402
from medusa.model.embedded import EMBEDDED_NAME, EMBEDDED_REPO  # noqa: E402
from medusa.drafters import DRAFT_VOCAB, drafter_class, infer_head_config  # noqa: E402
from medusa.model.int8_weights import dequantize_tensors, save_quantized  # noqa: E402
from medusa.model.loader import EMBEDDED_DEFAULT_DIR, TREE_FILE  # noqa: E402

HEADS_JSON, HEADS_WEIGHTS, ADAPTER = "medusa_heads.json", "medusa_heads.safetensors", "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
BUDGET_MB = 25


def pack(
    heads_dir: Path,
    tree: Path,
    command: str,
    target: Path,
    draft_vocab: int = 0,
    vocab_text: Path | None = None,
    adapter: Path | None = None,
    int8: str = "",
) -> dict[str, int]:
    """Write the default into ``target``; returns the size in bytes of every file written."""
    meta = json.loads((heads_dir / HEADS_JSON).read_text())
    if adapter is None and meta.get("adapter"):
        adapter = heads_dir / meta["adapter"]
    if adapter is None or not (adapter / ADAPTER_FILES[1]).is_file():
        sys.exit(
            f"error: {heads_dir} holds no adapter folder: the default's heads must come with the"
            " translator they were trained on (train-heads --adapter copies it beside them)"
        )
    json.loads(tree.read_text())["paths"]  # a calibrated tree file, or a KeyError/JSON error here
    if target.resolve() in (heads_dir.resolve(), adapter.resolve().parent):
        sys.exit(
            f"error: --target {target} holds the files being packed: pack into another folder, then"
            " move it"
        )
    target.mkdir(parents=True, exist_ok=True)
    int8_heads, int8_adapter = int8 in ("heads", "both"), int8 in ("adapter", "both")
    # floats again if packed in int8 before
    saved = dequantize_tensors(load_file(str(heads_dir / HEADS_WEIGHTS)))
    weights = {
        k: (v.to(torch.float16) if v.is_floating_point() and not int8_heads else v).contiguous()
        for k, v in saved.items()
    }  # int8 codes from the saved floats
    training = dict(meta.get("training", {}))
    if draft_vocab:
        config = infer_head_config(saved, meta["hidden_size"], meta["vocab_size"])
        if not drafter_class(config.drafter).path_dependent:
            sys.exit(f"error: --draft-vocab is for path-dependent drafters (sequential, "
                     f"autoregressive, context); {heads_dir} holds {config.drafter} heads")
        rows = read_predictions(vocab_text)
        weights[DRAFT_VOCAB] = frequent_tokens(rows, draft_vocab, meta["vocab_size"])
        training["draft_vocab"] = draft_vocab
        training["draft_vocab_text"] = f"{vocab_text.name}: {len(rows)} sequences"
        # a vocabulary train-heads chose is replaced
        training.pop("draft_vocab_heldout_coverage", None)
    if int8_heads:
        save_quantized(weights, target / HEADS_WEIGHTS)
    else:
        save_file(weights, str(target / HEADS_WEIGHTS), metadata={"format": "pt"})
    if int8:  # what the packer stored row-wise in int8 (medusa/model/int8_weights.py)
        training["stored_int8"] = {
            "heads": "heads",
            "adapter": "adapter",
            "both": "heads and adapter",
        }[int8]
    else:
        training.pop("stored_int8", None)
    training["trained_on"] = [Path(d).name for d in training.get("trained_on", [])]
    training["adapter"] = ADAPTER
    training["command"] = command
    meta.update(training=training, adapter=ADAPTER, tree=TREE_FILE)
    (target / HEADS_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    if (target / ADAPTER).exists():
        shutil.rmtree(target / ADAPTER)
    (target / ADAPTER).mkdir()
    config = json.loads((adapter / ADAPTER_FILES[0]).read_text())
    # not the cache folder of the machine that trained it
    if meta.get("base_model") == EMBEDDED_NAME:
        config["base_model_name_or_path"] = EMBEDDED_REPO
    (target / ADAPTER / ADAPTER_FILES[0]).write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n"
    )
    adapter_weights = load_file(str(adapter / ADAPTER_FILES[1]))
    if int8_adapter:
        save_quantized(dequantize_tensors(adapter_weights), target / ADAPTER / ADAPTER_FILES[1])
    else:  # as saved, int8 ones included (they load either way)
        shutil.copyfile(adapter / ADAPTER_FILES[1], target / ADAPTER / ADAPTER_FILES[1])
    shutil.copyfile(tree, target / TREE_FILE)
    files = [target / HEADS_WEIGHTS, target / HEADS_JSON, target / TREE_FILE] + [
        target / ADAPTER / n for n in ADAPTER_FILES
    ]
    return {str(f.relative_to(target)): f.stat().st_size for f in files}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("heads", type=Path, help="a train-heads output folder (with its adapter/)")
    p.add_argument("tree", type=Path, help="the tree calibrate-tree made for these heads")
    p.add_argument(
        "--command", required=True, help="how the heads were trained, recorded in medusa_heads.json"
    )
    p.add_argument("--target", type=Path, default=EMBEDDED_DEFAULT_DIR)
    p.add_argument(
        "--draft-vocab",
        type=int,
        default=0,
        metavar="N",
        help="draft from the N tokens most frequent in --vocab-text (0: heads as they are)",
    )
    p.add_argument(
        "--vocab-text", type=Path, help="sequences.jsonl of the translator's own text (train-heads)"
    )
    p.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="the translator the heads were trained on, when it is not beside them (HEADS/adapter)",
    )
    p.add_argument("--int8", choices=["heads", "adapter", "both"], default="",
                   help="store these row-wise in int8 (the rest as above)")
    args = p.parse_args()
    if args.draft_vocab and (args.vocab_text is None or not args.vocab_text.is_file()):
        p.error("--draft-vocab needs --vocab-text, a sequences.jsonl file")
    sizes = pack(
        args.heads,
        args.tree,
        args.command,
        args.target,
        args.draft_vocab,
        args.vocab_text,
        args.adapter,
        args.int8,
    )
    for name, size in sizes.items():
        print(f"{size / 1e6:8.2f} MB  {name}")
    total = sum(sizes.values()) / 1e6
    print(f"{total:8.2f} MB  in all" + (f" (over the {BUDGET_MB} MB budget)" if total > BUDGET_MB
                                        else ""))


if __name__ == "__main__":
    main()
