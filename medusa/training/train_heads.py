"""``python medusa.py train-heads``: Medusa-1 head training by self-distillation on a frozen base
model.

The targets are the base model's own greedy continuations of prompts from a dataset, so the heads
learn to predict what this model will actually say (which is what verification accepts), not a
reference translation. With the base frozen, every hidden state is computed once and cached:
training then only runs the small heads, over shuffled positions, for as many epochs as wanted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from medusa.model.checkpoints import save_heads, save_medusa1
from medusa.console import say
from medusa.evaluation.data import load_examples
from medusa.model.batch_generate import batched_generate, batched_hidden_states
from medusa.training.context_training import ContextTrainer
from medusa.errors import MedusaError
from medusa.arg_types import COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_COUNT, POSITIVE, SEED
from medusa.model.draft_vocab import coverage, frequent_tokens
from medusa.drafters import Drafter, build_drafter, drafter_class, drafter_names
from medusa.evaluation.data_spec import DataSpec
from medusa.model.device_map import check_device_map
from medusa.model.model_spec import ServedBaseSpec
from medusa.model.loader import LoadSettings, load_model, shipped_folder, training_base
from medusa.model import MedusaModel, stop_token_ids
from medusa.evaluation.prompts import encode_prompt
from medusa.evaluation.results import read_predictions

SEQUENCES = "sequences.jsonl"
ADAPTER_DIR = "adapter"
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSettings(ServedBaseSpec, DataSpec):
    """Head shape, data and optimisation; ``head_decay`` weights head k's loss by decay**k (far
    heads count less). The base (with its adapter: heads must learn the model they will serve)
    and the rows come from their specs."""

    dataset: str | list[str] = "in22-gen-sample"  # one dataset, or several whose sources are pooled
    num_examples: int | None = None  # every row
    prompt_style: str = "chat"
    max_new_tokens: int = 64
    generation_batch_size: int = 32
    # continuations sampled per source beside the greedy one: more text to learn from
    samples_per_source: int = 0
    sample_temperature: float = 0.7
    num_heads: int = 5
    num_layers: int = 1
    shared_lm_head: bool = True
    # heads also see the base model's next token (see MedusaHeads); project format only
    token_input: bool = False
    # medusa | token-input | sequential | autoregressive | context; --token-input = token-input
    drafter: str = "medusa"
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    head_decay: float = 0.8
    # autoregressive drafter: also fit its predicted hidden states (EAGLE)
    feature_loss_weight: float = 0.0
    # targets: the base's greedy choice after each path, not the text's next token
    relabel_greedy: bool = False
    # > 0: path-dependent drafters draft from the N tokens their training text uses most
    draft_vocab: int = 0
    heldout_fraction: float = 0.1
    eval_every: int = 200
    output_dir: str = "heads"
    # Medusa-2 style: train a LoRA on the base with the heads (see train_joint.py)
    joint_lora: bool = False
    rank: int = 16
    alpha: int = 32
    head_loss_weight: float = 0.2
    resume: bool = False
    seed: int = 0
    # heads whose tensors of the same names and shapes start these (a warm start)
    init_from: str | None = None

    @property
    def datasets(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)


def training_sources(s: TrainSettings) -> list[tuple[str, str]]:
    """(key, source text) for every example of every dataset; keys stay unique when datasets are
    pooled."""
    pooled = []
    for name in s.datasets:
        examples, _ = load_examples(
            name, s.src_lang, s.tgt_lang, s.num_examples, s.hf_token, s.split
        )
        prefix = f"{name}:" if len(s.datasets) > 1 else ""
        pooled += [(f"{prefix}{ex.index}", ex.source) for ex in examples]
    return pooled


# Settings that change the self-distilled text: a cache made with other values must not be reused
# silently.
SEQUENCE_KEYS = (
    "model_name",
    "adapter",
    "src_lang",
    "tgt_lang",
    "prompt_style",
    "max_input_len",
    "max_new_tokens",
    "sample_temperature",
)
# Settings that change the heads' shapes or meaning: a checkpoint made with other values cannot be
# resumed.
RESUME_KEYS = (
    "model_name",
    "adapter",
    "num_heads",
    "num_layers",
    "shared_lm_head",
    "token_input",
    "drafter",
)
DRAFTERS = drafter_names()


def _differences(saved: dict, s: TrainSettings, keys: tuple[str, ...]) -> list[str]:
    now = asdict(s)
    return [f"{k} {saved[k]!r} → {now[k]!r}" for k in keys if k in saved and saved[k] != now[k]]


def sample_key(key: str, j: int) -> str:
    """The cache key of source ``key``'s j-th sampled continuation (j ≥ 1; the greedy one keeps
    ``key``)."""
    return f"{key}~{j}"


def self_distilled_sequences(model: MedusaModel, s: TrainSettings, cache_file: Path) -> list[dict]:
    """Prompt + the base model's greedy continuation for every example, then ``samples_per_source``
    sampled ones; cached, so reruns and resumes skip them. Every row names its ``source``, so splits
    can keep a source's rows together.

    Why sampled text: a drafter trained on the greedy text alone sees one path per prompt and
    overfits it (ten thousand sentences are few). Conditioned on its path, a sampled token's
    expected cross-entropy is the base's own distribution there, whose argmax is what greedy
    verification accepts on that path.
    """
    done: dict[str, dict] = {}
    meta_file = cache_file.with_suffix(".settings.json")
    # drop a line cut off by an interruption, so appends start on a fresh line
    if cache_file.exists():
        rows = read_predictions(cache_file)
        cache_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        done = {str(r["index"]): r for r in rows}
    sampled_before = any("source" in r and r["index"] != r["source"] for r in done.values())
    saved = json.loads(meta_file.read_text()) if done and meta_file.exists() else {}
    # the temperature matters only where sampled rows exist and more are asked for; otherwise the
    # saved one stays
    keys = SEQUENCE_KEYS if sampled_before and s.samples_per_source else SEQUENCE_KEYS[:-1]
    changed = _differences(saved, s, keys)
    if changed:
        raise MedusaError(f"{cache_file} was generated with other settings ({'; '.join(changed)}): "
                          "choose another --output-dir or delete it")
    meta = {k: asdict(s)[k] for k in SEQUENCE_KEYS}
    if sampled_before and not s.samples_per_source:
        meta["sample_temperature"] = saved.get("sample_temperature", meta["sample_temperature"])
    meta_file.write_text(json.dumps(meta) + "\n")
    sources = training_sources(s)
    stops = sorted(stop_token_ids(model.tokenizer, model.base_model))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else stops[0]
    greedy = [(key, src) for key, src in sources if key not in done]
    sampled = [(key, src) for key, src in sources
               if any(sample_key(key, j) not in done for j in range(1, s.samples_per_source + 1))]
    # written to the cache chunk by chunk, so an interruption loses little
    chunk = max(256, s.generation_batch_size)
    with open(cache_file, "a", encoding="utf-8") as f:
        for samples, todo in ((0, greedy), (s.samples_per_source, sampled)):
            what = (
                f"{samples} samples per source, temperature {s.sample_temperature}"
                if samples
                else "greedy"
            )
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                prompts = [
                    encode_prompt(
                        model.tokenizer,
                        src,
                        s.src_lang,
                        s.tgt_lang,
                        s.prompt_style,
                        s.max_input_len,
                    )
                    for _, src in part
                ]
                outs = batched_generate(
                    model.base_model,
                    prompts,
                    s.max_new_tokens,
                    stops,
                    pad,
                    s.generation_batch_size,
                    f"self-distillation ({what}) {start + len(part)}/{len(todo)}",
                    samples,
                    s.sample_temperature,
                    s.seed + start,
                )
                for (key, _), ids, conts in zip(part, prompts, outs):
                    names = (
                        [key]
                        if not samples
                        else [sample_key(key, j) for j in range(1, samples + 1)]
                    )
                    for name, cont in zip(names, conts):
                        if name not in done:
                            row = {
                                "index": name,
                                "source": key,
                                "prompt_len": len(ids),
                                "ids": ids + cont,
                            }
                            f.write(json.dumps(row) + "\n")
                            done[name] = row
                f.flush()
    return [done[name] for key, _ in sources
            for name in [key] + [sample_key(key, j) for j in range(1, s.samples_per_source + 1)]]


def split_by_source(rows: list[dict], s: TrainSettings) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows): a random ``heldout_fraction`` of the sources is held out
    whole (no sampled twin of a held-out sentence is trained on), and only its greedy rows are
    scored, the text decoding will see."""
    sources = list(dict.fromkeys(r.get("source", r["index"]) for r in rows))
    random.Random(s.seed).shuffle(sources)
    n_held = (
        max(1, int(len(sources) * s.heldout_fraction))
        if s.heldout_fraction > 0 and len(sources) > 1
        else 0
    )
    held = set(sources[:n_held])
    train = [r for r in rows if r.get("source", r["index"]) not in held]
    return train, [r for r in rows if r["index"] in held]


def _trainable(rows: list[dict]) -> list[dict]:
    """The rows with at least one training position (a hidden state with a target two tokens ahead).
    """
    rows = [r for r in rows if len(r["ids"]) >= max(r["prompt_len"] - 1, 0) + 3]
    if not rows:
        raise MedusaError(
            "no training positions: the continuations are too short (raise --max-new-tokens)"
        )
    return rows


def future_rows(rows: list[dict], num_heads: int) -> torch.Tensor:
    """[N, K] for the positions of :func:`hidden_and_targets` (same rows, same order): the index,
    among those positions, of the hidden state j + 1 tokens later in the same sequence (after t_j),
    or -1 where it is not one of them. That hidden state is what the autoregressive drafter's j-th
    prediction stands for."""
    out, offset = [], 0
    for r in _trainable(rows):
        n = len(r["ids"]) - 2 - max(r["prompt_len"] - 1, 0)
        ahead = torch.arange(n)[:, None] + 1 + torch.arange(num_heads)[None, :]
        out.append(torch.where(ahead < n, ahead + offset, torch.full_like(ahead, -1)))
        offset += n
    return torch.cat(out)


def feature_loss(
    states: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ_k w_k · mean smooth-L1 between the drafter's predicted hidden states [K, N, H] and the base
    model's [N, K, H] where ``valid`` [N, K]; EAGLE fits these as well as the tokens, a dense signal
    where text is scarce."""
    # [K, N]
    per = F.smooth_l1_loss(states.float(), targets.transpose(0, 1).float(), reduction="none").mean(
        -1
    )
    mask = valid.T.float()
    return sum(
        w * (per[k] * mask[k]).sum() / mask[k].sum().clamp(min=1) for k, w in enumerate(weights)
    )


@torch.inference_mode()
def hidden_and_targets(model: MedusaModel, rows: list[dict], num_heads: int, batch_size: int = 32,
                       relabel: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Last hidden states at every position that predicts generated text, the tokens that follow it
    (``paths`` [N, K]: t_0, the base model's next token, which token-input heads condition on, then
    t_1.. t_{K-1}, which sequential heads see in training), and each head's target there.

    Position i (hidden state after token i) trains head k on token i + k + 2 (= t_{k+1}); targets
    past the end are -100 (and the path tokens there 0). With ``relabel`` the target is instead the
    base model's own greedy choice after t_0..t_k (the argmax of its logits at token i + k + 1, from
    the same pass): the same on greedy text, and on sampled text the token greedy verification
    accepts below that path. Sequences run through the base in right-padded batches: causal
    attention leaves the real positions exact.
    """
    rows = _trainable(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
    hiddens: list[torch.Tensor | None] = [None] * len(rows)
    targets: list[torch.Tensor | None] = [None] * len(rows)
    nexts: list[torch.Tensor | None] = [None] * len(rows)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        hidden = batched_hidden_states(model, [rows[i]["ids"] for i in idx])
        for r, i in enumerate(idx):
            seq, start = rows[i]["ids"], max(rows[i]["prompt_len"] - 1, 0)
            h = hidden[r, start:len(seq) - 2]
            n = h.shape[0]
            tgt = torch.full((n, num_heads), -100, dtype=torch.long)
            greedy = (
                model.lm_head(hidden[r, start + 1 : len(seq) - 1]).argmax(-1).cpu()
                if relabel
                else None
            )
            for k in range(num_heads):
                future = seq[start + k + 2:]
                m = min(n, len(future))
                tgt[:m, k] = greedy[k:k + m] if relabel else torch.tensor(future[:n])
            path = torch.zeros((n, num_heads), dtype=torch.long)
            for j in range(num_heads):
                ahead = seq[start + 1 + j:]
                path[: min(n, len(ahead)), j] = torch.tensor(ahead[:n])
            hiddens[i], targets[i], nexts[i] = h.float().cpu(), tgt, path
    return torch.cat(hiddens), torch.cat(nexts), torch.cat(targets)


class PositionTrainer:
    """Batches of shuffled positions from cached hidden states (every drafter but the context
    drafter, whose layer reads whole sequences: context_training.py)."""

    heads: Drafter  # set once built, after the cache

    def __init__(self, model: MedusaModel, train: list[dict], held: list[dict], s: TrainSettings,
                 weights: torch.Tensor) -> None:
        self.s, self.weights = s, weights.to(model.lm_head.weight.device)
        self.x, self.paths, self.y = hidden_and_targets(
            model, train, s.num_heads, relabel=s.relabel_greedy
        )
        self.future = future_rows(train, s.num_heads) if s.feature_loss_weight else None
        self.held = hidden_and_targets(model, held, s.num_heads) if held else None
        self.device = model.lm_head.weight.device

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.x.shape[0] / self.s.batch_size)

    def loss(self, epoch: int, offset: int) -> torch.Tensor:
        s, device, heads = self.s, self.device, self.heads
        perm = torch.randperm(
            self.x.shape[0], generator=torch.Generator().manual_seed(s.seed + epoch)
        )
        idx = perm[offset * s.batch_size:(offset + 1) * s.batch_size]
        if self.future is None:
            logits = heads.teacher_forced(self.x[idx].to(device), self.paths[idx].to(device))
            return head_loss(logits, self.y[idx].to(device), self.weights)
        logits, states = heads.teacher_forced_states(
            self.x[idx].to(device), self.paths[idx].to(device)
        )
        ahead = self.future[idx]
        return head_loss(
            logits, self.y[idx].to(device), self.weights
        ) + s.feature_loss_weight * feature_loss(
            states, self.x[ahead.clamp(min=0)].to(device), (ahead >= 0).to(device), self.weights
        )

    def evaluate(self) -> dict:
        return evaluate_heads(self.heads, *self.held)


def copy_adapter(source: str, target: Path) -> None:
    """Copy a peft adapter folder's config and weights (not its training leftovers)."""
    import shutil

    src = Path(source)
    files = [f for f in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
             if (src / f).is_file()]
    if "adapter_config.json" not in files:
        raise MedusaError(
            f"--adapter {source} is not a local LoRA adapter folder (no adapter_config.json); "
            "download it first, since the heads keep a copy of the adapter they were trained on"
        )
    if src.resolve() == target.resolve():
        return
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(src / f, target / f)


def head_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k · CE(head k); logits [K, N, V], targets [N, K]."""
    losses = [
        F.cross_entropy(logits[k].float(), targets[:, k], ignore_index=-100)
        for k in range(logits.shape[0])
    ]
    return sum(w * l for w, l in zip(weights, losses))


@torch.no_grad()
def evaluate_heads(heads: Drafter, hidden: torch.Tensor, paths: torch.Tensor, targets: torch.Tensor,
                   batch: int = 1024) -> dict:
    """Top-1 and top-5 accuracy of each head on held-out positions."""
    k = heads.config.num_heads
    hit1, hit5, total = torch.zeros(k), torch.zeros(k), torch.zeros(k)
    device = next(heads.parameters()).device
    dtype = next(heads.parameters()).dtype
    for i in range(0, hidden.shape[0], batch):
        h = hidden[i:i + batch].to(device, dtype)
        t = targets[i:i + batch].to(device)
        # [K, n, 5]
        top = heads.teacher_forced(h, paths[i:i + batch].to(device)).topk(5, dim=-1).indices
        valid = t.T != -100  # [K, n]
        hit1 += ((top[..., 0] == t.T) & valid).sum(-1).float().cpu()
        hit5 += ((top == t.T[..., None]).any(-1) & valid).sum(-1).float().cpu()
        total += valid.sum(-1).float().cpu()
    total = total.clamp(min=1)
    return {
        "top1": (hit1 / total).tolist(),
        "top5": (hit5 / total).tolist(),
        "positions": int(total[0]),
    }


def train_heads(s: TrainSettings) -> dict:
    """Self-distil, cache hidden states, train the heads, evaluate on held-out prompts, save both
    formats."""
    s = checked_settings(s)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / CHECKPOINT).exists() and not s.resume:
        raise MedusaError(f"{out / CHECKPOINT} exists: pass --resume to continue it or choose "
                          "another --output-dir")
    random.seed(s.seed)
    torch.manual_seed(s.seed)
    model, start = frozen_base(s, out)
    rows = self_distilled_sequences(model, s, out / SEQUENCES)
    train, held = split_by_source(rows, s)
    trainer = make_trainer(model, train, held, s)
    heads = training_heads(model, s, start)
    trainer.heads = heads
    run = TrainingRun(s, heads, model.lm_head, trainer.steps_per_epoch, out / CHECKPOINT)
    run.train(trainer, bool(held))
    final = trainer.evaluate() if held else {}
    vocab_facts = choose_draft_vocab(heads, s, train, held)
    save_trained(heads, model, s, out, rows, final, run.step, vocab_facts)
    return {"history": run.history, "heldout": final}


def checked_settings(s: TrainSettings) -> TrainSettings:
    """The settings with ``--drafter`` resolved, once sure they fit together (one line saying what
    does not)."""
    if (s.num_heads < 1 or s.num_layers < 0 or s.epochs < 1 or s.batch_size < 1
            or not 0 <= s.heldout_fraction < 1):
        raise MedusaError("need --num-heads ≥ 1, --num-layers ≥ 0, --epochs ≥ 1, --batch-size ≥ 1, "
                          "0 ≤ --heldout-fraction < 1")
    check_sampling(s)
    s = resolve_drafter(s)
    kind = drafter_class(s.drafter)
    if s.feature_loss_weight < 0 or (s.feature_loss_weight and not kind.predicts_hidden):
        raise MedusaError("--feature-loss-weight is for --drafter autoregressive or context (their "
                          "predicted hidden states), ≥ 0")
    if s.draft_vocab < 0 or (s.draft_vocab and not (kind.path_dependent and s.shared_lm_head)):
        raise MedusaError("--draft-vocab N (N > 0) is for --drafter sequential, autoregressive or "
                          "context, which project with the shared lm_head")
    return s


def frozen_base(s: TrainSettings, out: Path) -> tuple[MedusaModel, dict[str, torch.Tensor] | None]:
    """The base model (adapter merged) with its weights frozen, and the ``--init-from`` tensors if
    given; a copy of the adapter goes beside the heads first, since they only fit the adapted
    model."""
    check_device_map(s)
    # embedded:faithful = embedded + its adapter
    s.model_name, s.adapter = training_base(s.model_name, s.adapter)
    model = load_model(LoadSettings(s.model_name, None, s.hf_token, s.device, s.dtype,
                                    adapter=s.adapter, embedded_extras=False,
                                    device_map=s.device_map, max_memory=s.max_memory))
    for p in model.base_model.parameters():
        p.requires_grad_(False)
    if s.adapter:  # checked before any training
        copy_adapter(s.adapter, out / ADAPTER_DIR)
    # a bad path fails before the work
    start = read_init_heads(s.init_from, s.hf_token) if s.init_from else None
    return model, start


def make_trainer(model: MedusaModel, train: list[dict], held: list[dict], s: TrainSettings):
    """Whole sequences through the base at every step for a drafter that reads the context; cached
    hidden states of shuffled positions for the others."""
    weights = torch.tensor([s.head_decay ** k for k in range(s.num_heads)])
    if drafter_class(s.drafter).needs_context:
        say(f"training on {len(train)} sequences, {len(held)} held out")
        return ContextTrainer(model, train, held, s.num_heads, s.batch_size, weights,
                              s.relabel_greedy, s.feature_loss_weight, s.seed)
    # (before the shared projection turns fp32: the cache runs the base in its own dtype)
    say(f"caching hidden states: {len(train)} training and {len(held)} held-out sequences")
    return PositionTrainer(model, train, held, s, weights)


def training_heads(model: MedusaModel, s: TrainSettings, start: dict[str, torch.Tensor] | None
                   ) -> Drafter:
    """A fresh drafter of ``--drafter``'s kind in float32 (warm-started from ``start``); what it
    reads of the frozen base (the shared projection, the input embedding) turns float32 too."""
    lm_head = model.lm_head
    hidden_size, vocab = lm_head.weight.shape[1], lm_head.weight.shape[0]
    config = drafter_class(s.drafter).training_config(
        s.num_heads, s.num_layers, hidden_size, vocab, s.shared_lm_head,
        attention_heads_for(model.base_model.config, hidden_size))
    embedding = model.base_model.get_input_embeddings()
    heads = build_drafter(config, lm_head, embedding)
    heads = heads.to(device=lm_head.weight.device, dtype=torch.float32)
    if start is not None:
        copied = init_heads_from(heads, start, s.init_from)
        say(f"started from {s.init_from}: {len(copied)} tensors ({', '.join(copied[:6])}"
            f"{', …' if len(copied) > 6 else ''})")
    if config.shared_lm_head:
        lm_head.float()  # heads train in fp32; the shared projection stays frozen
    if heads.reads_next_token:
        embedding.float()  # (tied to the projection in many models; frozen either way)
    return heads


class TrainingRun:
    """The optimiser, its schedule and the step count of one training, checkpointed to
    ``ckpt_path`` (and resumed from it with ``--resume``)."""

    def __init__(self, s: TrainSettings, heads: Drafter, lm_head: torch.nn.Module,
                 steps_per_epoch: int, ckpt_path: Path) -> None:
        self.s, self.heads, self.ckpt_path = s, heads, ckpt_path
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total = steps_per_epoch * s.epochs
        params = [p for p in heads.parameters() if p.requires_grad and p is not lm_head.weight]
        self.optim = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, lambda t: min(1.0, (t + 1) / max(1, total // 20))
            * 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
        self.step, self.history = 0, []
        self.device = lm_head.weight.device
        if s.resume and ckpt_path.exists():
            self.resume()

    def resume(self) -> None:
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        changed = _differences(state.get("settings", {}), self.s, RESUME_KEYS)
        if changed:
            raise MedusaError(f"cannot resume {self.ckpt_path}: it was trained with "
                              f"{'; '.join(changed)}; resume with the same settings or choose "
                              "another --output-dir")
        self.heads.load_head_state_dict(state["heads"])
        self.optim.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.history = state["step"], state["history"]
        say(f"resumed at step {self.step}/{self.total_steps}")

    def save_checkpoint(self) -> None:
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save({"heads": self.heads.head_state_dict(), "optimizer": self.optim.state_dict(),
                    "scheduler": self.sched.state_dict(), "step": self.step,
                    "history": self.history,
                    "settings": {k: v for k, v in asdict(self.s).items() if k != "hf_token"}}, tmp)
        tmp.replace(self.ckpt_path)

    def train(self, trainer, held: bool) -> None:
        """Steps to the end, with a held-out evaluation and a checkpoint every ``--eval-every``."""
        from tqdm.auto import tqdm

        if self.device.type == "cuda":  # the heads train in fp32; TF32 matmuls are ~8x faster
            torch.backends.cuda.matmul.allow_tf32 = True
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train heads", unit="step",
                   dynamic_ncols=True)
        while self.step < self.total_steps:
            loss = trainer.loss(*divmod(self.step, self.steps_per_epoch))
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            self.optim.step()
            self.sched.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if self.step % self.s.eval_every == 0 or self.step == self.total_steps:
                entry = {"step": self.step, "loss": loss.item()}
                if held:
                    entry.update(trainer.evaluate())
                self.history.append(entry)
                self.save_checkpoint()
        bar.close()


def choose_draft_vocab(heads: Drafter, s: TrainSettings, train: list[dict], held: list[dict]
                       ) -> dict:
    """With ``--draft-vocab``, set it from the training text; its coverage of the held-out text
    says what it costs. Returns the facts for the heads' metadata."""
    if not s.draft_vocab:
        return {}
    vocab = heads.config.vocab_size
    ids = frequent_tokens(train, min(s.draft_vocab, vocab), vocab)
    heads.set_draft_vocab(ids)
    facts = {"draft_vocab": len(ids), "draft_vocab_heldout_coverage": round(coverage(held, ids), 5)}
    say(f"draft vocabulary: the {len(ids)} most frequent tokens of the training text, "
        f"{facts['draft_vocab_heldout_coverage']:.2%} of the held-out text's tokens")
    return facts


def save_trained(heads: Drafter, model: MedusaModel, s: TrainSettings, out: Path,
                 rows: list[dict], final: dict, steps: int, vocab_facts: dict) -> None:
    """The project format with the training record (and FasterDecoding's Medusa-1 layout where it
    holds the kind); the held-out accuracy printed."""
    base_name = model.info.base_id or model.info.base  # a base that loads again, adapter apart
    meta = {"trained_on": s.datasets, "examples": len(rows),
            "sources": len({r.get("source", r["index"]) for r in rows}),
            "samples_per_source": s.samples_per_source,
            "feature_loss_weight": s.feature_loss_weight,
            "relabel_greedy": s.relabel_greedy, "heldout": final, "steps": steps,
            "num_layers": s.num_layers, "epochs": s.epochs, "token_input": s.token_input,
            "drafter": s.drafter, **vocab_facts}
    extra: dict = {"training": meta}
    if s.adapter:  # copied beside the heads at the start; merged whenever they load
        extra["adapter"] = ADAPTER_DIR
        meta["adapter"] = s.adapter
    save_heads(heads, out, base_name, extra=extra)
    medusa1 = heads.medusa1_layout
    if medusa1:
        save_medusa1(heads, out / "medusa1", base_name)
    if final:
        print("held-out top-1: " + ", ".join(f"{a:.3f}" for a in final["top1"]))
        print("held-out top-5: " + ", ".join(f"{a:.3f}" for a in final["top5"]))
    say(f"saved heads to {out} (project format)"
        + (f" and {out / 'medusa1'} (FasterDecoding Medusa-1 format)" if medusa1 else ""))


def read_init_heads(location: str, token: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the heads ``--init-from`` names (project or Medusa-1 format)."""
    from medusa.model.checkpoints import read_head_checkpoint

    ckpt = read_head_checkpoint(shipped_folder(location), token)
    if ckpt is None:
        raise MedusaError(
            f"--init-from {location}: no heads there (a folder with medusa_heads.json, or a weights"
            " file)"
        )
    return ckpt.state


def init_heads_from(heads: Drafter, state: dict[str, torch.Tensor], location: str) -> list[str]:
    """Copy into ``heads`` every tensor of ``state`` with the same name and shape (e.g. a trained
    autoregressive drafter's layer into a context drafter, whose layer has the same weights but no
    learned position table); returns their names. Nothing in common is a one-line error."""
    own = heads.head_state_dict()
    same = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)
            and k != "drafter.depth"}
    if not same:
        raise MedusaError(
            f"--init-from {location}: none of its tensors fits these heads (another drafter or"
            " shape)"
        )
    heads.load_head_state_dict({**own, **same})
    return sorted(same)


def check_sampling(s: TrainSettings) -> None:
    if s.samples_per_source < 0 or not s.sample_temperature > 0:
        raise MedusaError(
            "need --samples-per-source ≥ 0 and --sample-temperature > 0 (got"
            f" {s.samples_per_source} and {s.sample_temperature})"
        )


def attention_heads_for(base_config, hidden_size: int) -> int:
    """The drafter layer's attention heads: the base model's count where it divides the width, else
    64-wide heads."""
    heads = getattr(base_config, "num_attention_heads", 0) or 0
    if heads and hidden_size % heads == 0:
        return heads
    return max(1, hidden_size // 64) if hidden_size % 64 == 0 else 1


def resolve_drafter(s: TrainSettings) -> TrainSettings:
    """``--token-input`` is ``--drafter token-input``; a known drafter with flags that fit it, or
    one line saying what is wrong."""
    from dataclasses import replace

    if s.drafter not in DRAFTERS:
        raise MedusaError(f"--drafter {s.drafter}: use one of {', '.join(DRAFTERS)}")
    if s.token_input and s.drafter not in ("medusa", "token-input"):
        raise MedusaError(
            f"--token-input and --drafter {s.drafter} contradict each other; pass one of them"
        )
    if s.joint_lora and not drafter_class(s.drafter).joint_training:
        joint = " or ".join(name for name in DRAFTERS if drafter_class(name).joint_training)
        raise MedusaError(f"--joint-lora trains {joint} heads; {s.drafter} drafters train on a "
                          "frozen base")
    drafter = "token-input" if s.token_input else s.drafter
    return replace(s, drafter=drafter, token_input=drafter == "token-input")


HELPS = {
    "model_name": "the base model the heads learn: a local folder, a hub id or a .gguf file "
    "({default})",
    "adapter": "LoRA adapter merged into the base before training",
    "num_examples": "first N rows of each dataset (all)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainSettings()
    DataSpec.add_arguments(p, d, {"dataset": "prompts to self-distil (repeatable: sources are "
                                  f"pooled; default {d.dataset})"}, only=("dataset",), many=True)
    ServedBaseSpec.add_arguments(p, d, HELPS, only=("adapter",))
    p.add_argument("--init-from", default=None, metavar="HEADS",
                   help="start from these trained heads' tensors where names and shapes match "
                   "(e.g. a context drafter from a trained autoregressive drafter); the rest "
                   "starts fresh")
    ServedBaseSpec.add_arguments(p, d, HELPS, only=("model_name",))
    DataSpec.add_arguments(p, d, HELPS, auto_style=False, only=(
        "split", "src_lang", "tgt_lang", "num_examples", "prompt_style", "max_input_len"))
    add_training_flags(p, d)
    ServedBaseSpec.add_arguments(p, d, only=("device", "dtype", "hf_token", "device_map"))
    add_drafter_flags(p, d)


TRAINING_FLAGS = (  # flag, type, help (the default is added)
    ("max-new-tokens", COUNT, "greedy tokens generated per prompt: the text the heads learn"),
    ("generation-batch-size", COUNT, "prompts generated at once"),
    ("samples-per-source", NON_NEGATIVE_COUNT, "continuations sampled per source beside the greedy "
     "one"),
    ("sample-temperature", POSITIVE, "temperature of those sampled continuations"),
    ("num-heads", COUNT, "heads to train"),
    ("num-layers", NON_NEGATIVE_COUNT, "residual blocks per head"),
    ("epochs", COUNT, "passes over the training positions"),
    ("batch-size", COUNT, "positions per step"),
    ("lr", POSITIVE, "learning rate"),
    ("weight-decay", NON_NEGATIVE, "AdamW weight decay"),
    ("head-decay", POSITIVE, "head k's loss is weighted by this to the power k: far heads count "
     "less"),
    ("feature-loss-weight", NON_NEGATIVE, "autoregressive drafter: weight of fitting its predicted "
     "hidden states (EAGLE)"),
    ("draft-vocab", NON_NEGATIVE_COUNT, "path-dependent drafters: draft from the N tokens their "
     "training text uses most; 0: the whole vocabulary"),
    ("heldout-fraction", FRACTION, "share of the sources held out to measure the heads"),
    ("eval-every", COUNT, "steps between held-out measurements"),
    ("output-dir", str, "where the heads, their checkpoint and the generated text go"),
    ("seed", SEED, "random seed"),
    ("rank", COUNT, "--joint-lora: the LoRA's rank"),
    ("alpha", COUNT, "--joint-lora: the LoRA's alpha"),
    ("head-loss-weight", POSITIVE, "--joint-lora: weight of the heads' loss beside the base's"),
)


def add_training_flags(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    """The self-distilled text, the heads' shape, optimisation, held-out checks, --joint-lora."""
    for name, kind, text in TRAINING_FLAGS:
        default = getattr(d, name.replace("-", "_"))
        p.add_argument(f"--{name}", type=kind, default=default, help=f"{text} ({default})")


def add_drafter_flags(p: argparse.ArgumentParser, d: TrainSettings) -> None:
    """The drafter's kind and projection, its targets, resuming and Medusa-2."""
    p.add_argument("--own-lm-head", action="store_true",
                   help="give every head its own vocabulary projection")
    p.add_argument("--drafter", default=d.drafter, choices=DRAFTERS,
                   help="medusa: plain heads on the last hidden state; token-input: heads also see "
                   "the base model's next token; sequential: head k also sees the draft tokens "
                   "above it (Hydra-style, drafted depth by depth); autoregressive: one "
                   "EAGLE-style decoder layer predicting the next hidden state from the current "
                   "one and the token, projected by the base lm_head; context: the same layer "
                   "attending over the whole context through a cache of its own (EAGLE's drafter; "
                   "decoded by the eager loop). Only medusa heads are also exported in "
                   "FasterDecoding's Medusa-1 layout")
    p.add_argument("--token-input", action="store_true", help="the same as --drafter token-input")
    p.add_argument("--relabel-greedy", action="store_true",
                   help="train on the base model's own greedy choice after each path "
                   "(teacher-forced) instead of the text's next token: the same on greedy text; on "
                   "--samples-per-source text, the token greedy verification accepts below each "
                   "sampled path (for path-dependent drafters)")
    p.add_argument("--resume", action="store_true",
                   help="continue a frozen-base run from its checkpoint")
    p.add_argument("--joint-lora", action="store_true",
                   help="Medusa-2: also train a LoRA on the base (--rank, --alpha), keeping its "
                   "next-token distribution close to the original by a KL term; heads loss × "
                   "--head-loss-weight")


def settings_from(args: argparse.Namespace) -> TrainSettings:
    values = vars(args).copy()
    values["shared_lm_head"] = not values.pop("own_lm_head")
    values["dataset"] = values["dataset"] or TrainSettings.dataset
    if values["joint_lora"] and values["init_from"]:
        raise MedusaError(
            "--init-from starts frozen-base training (train-heads without --joint-lora)"
        )
    if values["joint_lora"] and values["device_map"]:
        raise MedusaError(
            "--joint-lora trains the base too, which needs it on one device: drop --device-map (it "
            "splits a frozen base only)"
        )
    return resolve_drafter(TrainSettings(**values))
