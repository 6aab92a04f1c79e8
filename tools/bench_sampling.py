"""Sampling speed and quality in one process: transformers ``generate(do_sample=True)`` with a
static cache against our single-head sampling and the shipped tree's lossless speculative sampling,
at each temperature; and Medusa's typical acceptance (``p > min(ε, α·exp(−H))``, α = √ε) beside
lossless sampling at one temperature. Prints two tables, writes a JSON record and a plot.

    python tools/bench_sampling.py                       # embedded default, 30 FLORES-200 rows
    python tools/bench_sampling.py --temperatures 0.7 --epsilons 0.09 -n 4 --out s.json

Method: the same prompts for every method; one untimed warm-up decode per method (our captured
steps are built before it; ``generate`` static decodes every prompt once, as it compiles per
shape), then ``--rounds`` interleaved rounds (the order rotates), each decode CUDA-synchronised and
timed on its own. Per method: medians over rounds of tokens/s and τ (tokens per step; 1 for
``generate``), the speedup over ``generate`` sampling with a static cache and over our single-head
sampling at the same temperature, and chrF (sacreBLEU, 13a) of the last round's outputs against the
references. Temperature 0 rows are greedy (``generate`` with ``do_sample=False``). Our draws are
seeded per prompt (``--seed``); ``generate`` draws from torch's global generator, seeded once.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import bench_decode  # noqa: E402
from bench_decode import provenance, sync, timed_rounds, write_record  # noqa: E402

from medusa.decoding import DecodeSettings, make_strategy  # noqa: E402
from medusa.decoding.engine import StaticEngine  # noqa: E402
from medusa.evaluation.metrics import sacrebleu_scores  # noqa: E402


@dataclass
class HFSample:
    """``generate`` with a static cache: sampled at ``temperature`` (greedy at 0)."""

    temperature: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="embedded (default) or a heads folder")
    p.add_argument("-d", "--dataset", default="flores200-sample",
                   help="Hindi rows to translate (flores200-sample: FLORES-200 devtest)")
    p.add_argument("-n", type=int, default=30, help="prompts (30)")
    p.add_argument("-mol", "--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    p.add_argument("--temperatures", default="0,0.3,0.7,1.0",
                   help="comma list: generate, single-head and tree at each")
    p.add_argument("--epsilons", default="0.01,0.03,0.09,0.3",
                   help="typical acceptance thresholds ε (α = √ε) at --typical-temperature")
    p.add_argument("--typical-temperature", type=float, default=0.7)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-hf", action="store_true", help="leave generate out")
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--plot", default=None,
                   help="PNG of chrF and τ against ε (default: beside --out)")
    return p.parse_args(argv)


def load(args):
    """(model, prompts, references, stop ids, tree file)"""
    from medusa.cli import quiet_libraries
    from medusa.evaluation.data import load_examples
    from medusa.evaluation.prompts import encode_prompt, process_reference
    from medusa.model import stop_token_ids
    from medusa.model.loader import LoadSettings, load_model

    quiet_libraries(False)
    model = load_model(LoadSettings(args.model, dtype=args.dtype, small_fp32=True))
    examples, _ = load_examples(args.dataset, "hin_Deva", "eng_Latn", args.n)
    prompts = [encode_prompt(model.tokenizer, ex.source, "hin_Deva", "eng_Latn", "chat", 1000)
               for ex in examples]
    refs = [process_reference(model.tokenizer, ex.target, args.max_new_tokens) for ex in examples]
    stops = stop_token_ids(model.tokenizer, model.base_model)
    return model, prompts, refs, stops, model.info.extra.get("tree")


def make_methods(args, tree_file: str | None) -> dict[str, object]:
    """Per temperature: generate, single-head and the tree; then typical acceptance per ε."""
    methods: dict[str, object] = {}
    for t in [float(x) for x in args.temperatures.split(",") if x]:
        if not args.no_hf:
            methods[f"T{t:g}/generate-static"] = HFSample(t)
        common = dict(temperature=t, seed=args.seed)
        methods[f"T{t:g}/single-head"] = DecodeSettings(**common)
        methods[f"T{t:g}/tree"] = DecodeSettings("tree", 4, tree_file=tree_file, **common)
    t = args.typical_temperature
    for eps in [float(x) for x in args.epsilons.split(",") if x]:
        methods[f"T{t:g}/typical-eps{eps:g}"] = DecodeSettings(
            "tree", 4, acceptance="typical", posterior_threshold=eps,
            posterior_alpha=math.sqrt(eps), tree_file=tree_file, temperature=t, seed=args.seed)
    return methods


class Decoder(bench_decode.Decoder):
    """bench_decode's decoder (ours: a (strategy, engine) pair), with ``generate`` sampled."""

    def __call__(self, method, ids: list[int]) -> tuple[list[int], int]:
        """(generated ids without the stop token, decoding steps)"""
        if not isinstance(method, HFSample):
            return super().__call__(method, ids)
        sampled = method.temperature > 0
        extra = (dict(do_sample=True, temperature=method.temperature, top_k=0, top_p=1.0)
                 if sampled else dict(do_sample=False))
        out = self.model.base_model.generate(
            torch.tensor([ids], device=self.model.device), max_new_tokens=self.max_new_tokens,
            cache_implementation="static", pad_token_id=min(self.stops),
            eos_token_id=sorted(self.stops), **extra)
        toks = out[0, len(ids):].tolist()
        while toks and toks[-1] in self.stops:
            toks.pop()
        return toks, max(len(toks), 1)


def warm_up(methods: dict, decode: Decoder, prompts: list[list[int]]) -> None:
    """Untimed: our captured steps are built, ``generate`` static decodes every prompt (it
    compiles per shape)."""
    for name, method in methods.items():
        start = time.perf_counter()
        hf = isinstance(method, HFSample)
        if not hf:
            method[1].prepare(method[0], max(map(len, prompts)), decode.max_new_tokens)
        for ids in prompts if hf else prompts[:1]:
            decode(method, ids)
        sync()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)


def summarise(results: dict, outputs: dict, tokenizer, refs: list[str]) -> dict:
    summary = {}
    for name, res in results.items():
        texts = [tokenizer.decode(t, skip_special_tokens=True) for t in outputs[name]]
        summary[name] = {
            "tokens_per_s": statistics.median(res["tokens_per_s"]),
            "tokens_per_s_rounds": res["tokens_per_s"],
            "tau": statistics.median(res["tau"]),
            "chrf": sacrebleu_scores(texts, refs, "eng_Latn")["chrf"],
            "tokens": sum(map(len, outputs[name])),
        }
    for name, row in summary.items():
        temp = name.split("/", 1)[0]
        for base in ("generate-static", "single-head"):
            other = summary.get(f"{temp}/{base}")
            if other is not None and f"{temp}/{base}" != name:
                row[f"speedup_vs_{base}"] = row["tokens_per_s"] / other["tokens_per_s"]
    return summary


def print_tables(summary: dict) -> None:
    print(f"\n{'method':<28}{'tokens/s':>10}{'tau':>7}{'chrF':>7}{'vs generate':>13}"
          f"{'vs single-head':>16}")
    for name, row in summary.items():
        vs_hf = row.get("speedup_vs_generate-static")
        vs_sh = row.get("speedup_vs_single-head")
        print(f"{name:<28}{row['tokens_per_s']:>10.1f}{row['tau']:>7.2f}{row['chrf']:>7.1f}"
              f"{'' if vs_hf is None else f'{vs_hf:.2f}x':>13}"
              f"{'' if vs_sh is None else f'{vs_sh:.2f}x':>16}")


def plot(summary: dict, temperature: float, path: Path) -> None:
    """chrF and τ against ε for typical acceptance, with lossless sampling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = f"T{temperature:g}/typical-eps"
    rows = sorted((float(k[len(prefix):]), v) for k, v in summary.items() if k.startswith(prefix))
    lossless = summary.get(f"T{temperature:g}/tree")
    if not rows:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    eps = [e for e, _ in rows]
    for ax, key, label in ((left, "chrf", "chrF"), (right, "tau", "τ (tokens per step)")):
        ax.plot(eps, [v[key] for _, v in rows], "o-", label="typical, α = √ε")
        if lossless is not None:
            ax.axhline(lossless[key], color="k", ls="--", label="lossless (speculative sampling)")
        ax.set_xscale("log")
        ax.set_xlabel("ε (posterior threshold)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(f"typical acceptance against lossless sampling, temperature {temperature:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA: the static engine runs its step uncaptured (a check of this tool, not a"
              " timing)")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, prompts, refs, stops, tree_file = load(args)
    print(f"model: {model.info.base} + heads {model.info.heads}; {model.info.extra.get('dtype')};"
          f" {len(prompts)} prompts; loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    engine = StaticEngine(model, capture=cuda, quiet=True)
    methods = {name: m if isinstance(m, HFSample) else (make_strategy(m), engine)
               for name, m in make_methods(args, tree_file).items()}
    decode = Decoder(model, stops, args.max_new_tokens)
    warm_up(methods, decode, prompts)
    results, outputs = timed_rounds(methods, decode, prompts, args.rounds)
    summary = summarise(results, outputs, model.tokenizer, refs)
    print_tables(summary)
    record = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "model": f"{model.info.base} + heads {model.info.heads}",
        "tree": Path(tree_file).name if tree_file else None,
        "dtype": model.info.extra.get("dtype"),
        "dataset": args.dataset,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "seed": args.seed,
        "typical_temperature": args.typical_temperature,
        "methods": summary,
        **provenance(),
    }
    write_record(record, args.out)
    if args.out:
        out = Path(args.out)
        plot(summary, args.typical_temperature, Path(args.plot or out.with_suffix(".png")))
    elif args.plot:
        plot(summary, args.typical_temperature, Path(args.plot))


if __name__ == "__main__":
    main()
