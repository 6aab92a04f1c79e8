"""Per-token cost of our eager single-head loop against transformers ``generate`` on a random-weight
model with SmolLM2-135M's shape (30 layers, hidden 576, vocabulary 49152): no download, and the
launch-bound regime of small models. Prints ms per token of each (median of 3 runs of ``--tokens``
tokens), their ratio and the device; ``--profile`` adds where the host time goes in each (cProfile).

    python tools/loop_overhead.py [--device cuda] [--dtype bfloat16] [--tokens 100] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from medusa.decoding import generate, make_strategy  # noqa: E402
from medusa.model import MedusaModel  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(a.device, getattr(torch, a.dtype)).eval()
    wrapped = MedusaModel(model, tokenizer=None)
    prompt = list(range(100, 300))
    strategy = make_strategy("single-head")

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    def ours() -> int:
        return len(generate(wrapped, strategy, prompt, a.tokens, set()).tokens)

    def theirs() -> int:
        out = model.generate(torch.tensor([prompt], device=a.device), max_new_tokens=a.tokens,
                             min_new_tokens=a.tokens, do_sample=False, pad_token_id=0)
        return out.shape[1] - len(prompt)

    results = {}
    for name, fn in (("medusa single-head", ours), ("transformers generate", theirs)):
        fn()
        sync()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            n = fn()
            sync()
            times.append((time.perf_counter() - t) / n)
        results[name] = sorted(times)[1]
        print(f"{name:24s} {results[name] * 1e3:7.2f} ms/token (median of 3 x {n} tokens)")
        if a.profile:
            prof = cProfile.Profile()
            prof.runcall(fn)
            sync()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    mine, ref = results.values()
    print(f"ratio generate/ours (speed of ours relative to generate): {ref / mine:.3f}; "
          f"{a.dtype} on {torch.cuda.get_device_name() if a.device.startswith('cuda') else 'cpu'}")


if __name__ == "__main__":
    main()
