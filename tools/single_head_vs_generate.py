"""Speed of our eager single-head loop against transformers' greedy ``generate`` in one process, on
the same prompts (interleaved per prompt, one warm-up each): prints tokens/s of each, their ratio,
how many outputs differ (none in fp32), the model, dtype and device.

    python tools/single_head_vs_generate.py [--model-name embedded] [--dataset in22-gen-sample] [-n
    20] [-mol 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from medusa.cli import quiet_libraries  # noqa: E402
from medusa.evaluation.data import load_examples  # noqa: E402
from medusa.decoding import generate, make_strategy  # noqa: E402
from medusa.model.loader import LoadSettings, load_model  # noqa: E402
from medusa.model import stop_token_ids  # noqa: E402
from medusa.evaluation.prompts import encode_prompt  # noqa: E402
from medusa.runner import Timer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-name", "-m", default="embedded")
    p.add_argument("--dataset", "-d", default="in22-gen-sample")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--max-output-len", "-mol", type=int, default=50)
    p.add_argument("--prompt-style", default="chat")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    a = p.parse_args()
    quiet_libraries(False)
    model = load_model(
        LoadSettings(a.model_name, device=a.device, dtype=a.dtype, embedded_extras=False)
    )
    examples, _ = load_examples(a.dataset, "hin_Deva", "eng_Latn", a.n)
    stops = stop_token_ids(model.tokenizer, model.base_model)
    prompts = [
        encode_prompt(model.tokenizer, ex.source, "hin_Deva", "eng_Latn", a.prompt_style, 1000)
        for ex in examples
    ]
    strategy = make_strategy("single-head")

    def ours(ids):
        return generate(model, strategy, ids, a.max_output_len, stops).tokens

    def theirs(ids):
        out = model.base_model.generate(
            torch.tensor([ids], device=model.device),
            max_new_tokens=a.max_output_len,
            do_sample=False,
            eos_token_id=sorted(stops),
            pad_token_id=min(stops),
        )
        toks = out[0, len(ids):].tolist()
        while toks and toks[-1] in stops:
            toks.pop()
        return toks

    for fn in (ours, theirs):  # warm-up
        fn(prompts[0])
    # interleaved per prompt, so clock ramps and other drift hit both sides alike
    names = ("medusa single-head", "transformers generate")
    totals = {n: [0, 0.0] for n in names}
    outputs: dict[str, list] = {n: [] for n in names}
    for ids in prompts:
        for name, fn in zip(names, (ours, theirs)):
            with Timer(model.device) as t:
                toks = fn(ids)
            totals[name][0] += len(toks)
            totals[name][1] += t.seconds
            outputs[name].append(toks)
    for name in names:
        tokens, seconds = totals[name]
        print(f"{name:24s} {tokens:6d} tokens {seconds:8.2f} s {tokens / seconds:8.2f} tok/s")
    (t1, s1), (t2, s2) = totals.values()
    differ = sum(x != y for x, y in zip(*outputs.values()))
    print(
        f"ratio (ours / generate, tok/s): {(t1 / s1) / (t2 / s2):.3f}; outputs differing:"
        f" {differ}/{len(prompts)}"
    )
    print(f"model {model.info.base}, {model.info.extra['dtype']} on {model.info.extra['device']}, "
          f"device {torch.cuda.get_device_name() if model.device.type == 'cuda' else 'cpu'}")


if __name__ == "__main__":
    main()
