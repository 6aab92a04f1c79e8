"""Replay: greedy-verified τ of many strategies from one teacher-forced pass, without decoding step
by step.

With greedy acceptance the output is the base model's own greedy continuation, and at every step the
heads see the hidden state of the last accepted token, which causal attention makes equal to the
teacher-forced one. So one batched forward over prompt + greedy output gives every step's draft
inputs, and a step's accepted length is the deepest draft path that matches the output. A thousand
rows × seven strategies then costs seconds instead of hours of launch-bound decoding; the tests
check that it reproduces the decode loop's per-step counts exactly.

Independent heads are replayed from ranked lists (:func:`ranked_positions`): a draft is a lookup.
Path-dependent drafters (sequential heads, the autoregressive drafter) choose each token below the
ones above it, so their replay (:func:`drafted_replay`) lets the strategy draft for real at every
visited position, from that position's teacher-forced hidden state; what it saves is the verify
forward and the host loop, which are most of a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from medusa.model.batch_generate import batched_hidden_states
from medusa.decoding.base import DecodeState, Strategy, Tree
from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.model.drafter_context import DrafterContext


@dataclass
class RankedPositions:
    """Best R (log-prob, id) of the base and of each head after 0, 1, …, n generated tokens (P = n +
    1 rows)."""

    base_lp: torch.Tensor  # [P, R]
    base_ids: torch.Tensor  # [P, R]
    head_lp: torch.Tensor  # [K, P, R]
    head_ids: torch.Tensor  # [K, P, R]


@torch.inference_mode()
def ranked_positions(model: MedusaModel, rows: list[tuple[list[int], list[int]]], num_heads: int,
                     max_rank: int = 10, batch_size: int = 16) -> list[RankedPositions]:
    """Teacher-forced top-``max_rank`` lists for each (prompt ids, generated ids) row, in
    right-padded batches."""
    if num_heads > model.num_heads:
        raise MedusaError(f"replay asked for {num_heads} heads, the model has {model.num_heads}")
    # their drafts depend on the tokens above each node: one ranked list cannot say
    if model.heads.path_dependent:
        raise MedusaError(
            f"{model.heads.name} drafters cannot be replayed from one ranked list per head "
            "(each draft depends on the tokens above it): use drafted_replay"
        )
    out: list[RankedPositions | None] = [None] * len(rows)
    for i, h in _teacher_forced(model, rows, batch_size):
        logits = model.lm_head(h)
        base = logits.float().log_softmax(-1).topk(max_rank, dim=-1)
        heads = (
            model.project_heads(h, logits, num_heads).float().log_softmax(-1).topk(max_rank, dim=-1)
        )
        out[i] = RankedPositions(
            base.values.cpu(), base.indices.cpu(), heads.values.cpu(), heads.indices.cpu()
        )
    return out  # type: ignore[return-value]


def _teacher_forced(model: MedusaModel, rows: list[tuple[list[int], list[int]]], batch_size: int
                    ) -> Iterator[tuple[int, torch.Tensor]]:
    """(row index, last hidden states [n + 1, H] after 0..n generated tokens) for each (prompt,
    generated) row, from right-padded batches of similar lengths (so rows come out of order)."""
    for i, hidden in _teacher_forced_whole(model, rows, batch_size):
        yield i, hidden[len(rows[i][0]) - 1:]


def _teacher_forced_whole(
    model: MedusaModel, rows: list[tuple[list[int], list[int]]], batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(row index, last hidden states [len(prompt) + n, H] after every token of prompt + generated).
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        hidden = batched_hidden_states(model, [rows[i][0] + rows[i][1] for i in idx])
        for r, i in enumerate(idx):
            prompt, gen = rows[i]
            yield i, hidden[r, :len(prompt) + len(gen)]


def _draft(strategy: Strategy, ranked: RankedPositions, p: int, root: int, budget: int) -> Tree:
    return strategy.draft_from_ranks(root, (ranked.base_lp[p], ranked.base_ids[p]),
                                     (ranked.head_lp[:, p], ranked.head_ids[:, p]), budget)


def _matched_depth(tree: Tree, target: list[int]) -> int:
    """Nodes on the deepest path whose tokens equal ``target`` from its start (what greedy
    verification keeps)."""
    ok = [False] * len(tree)
    best = 0
    for i, (tok, parent) in enumerate(zip(tree.tokens, tree.parents)):
        d = tree.depths[i]
        ok[i] = d < len(target) and tok == target[d] and (parent < 0 or ok[parent])
        if ok[i]:
            best = max(best, d + 1)
    return best


def replay_steps(
    strategy: Strategy,
    generated: list[int],
    ranked: RankedPositions,
    max_new_tokens: int,
    stop_ids: set[int],
) -> list[int]:
    """Tokens accepted per step, as :func:`medusa.decoding.generate` with greedy acceptance would
    count them.

    ``generated`` excludes the stop token; shorter than ``max_new_tokens`` means decoding stopped on
    one.
    """
    if ranked.base_ids.shape[0] != len(generated) + 1:
        raise MedusaError("replay rows do not match their ranked positions")
    if strategy.max_rank > ranked.head_ids.shape[-1]:
        raise MedusaError(
            f"the tree uses rank {strategy.max_rank}; measure at least that many ranks"
        )
    return _accepted_steps(
        lambda p, root, budget: _draft(strategy, ranked, p, root, budget),
        generated,
        int(ranked.base_ids[len(generated), 0]),
        max_new_tokens,
        stop_ids,
    )


@torch.inference_mode()
def drafted_replay(
    model: MedusaModel,
    strategies: dict[str, Strategy],
    rows: list[tuple[list[int], list[int]]],
    max_new_tokens: int,
    stop_ids: set[int],
    batch_size: int = 16,
    progress: str | None = None,
) -> dict[str, list[list[int]]]:
    """Tokens accepted per step, per strategy and row (in ``rows`` order), for any drafter: one
    teacher-forced pass per batch of rows, then each strategy drafts (as in the decode loop, depth
    by depth for path-dependent drafters) at the positions it visits, from the hidden state there.
    """
    for key, strategy in strategies.items():
        greedy = getattr(getattr(strategy, "acceptance", None), "name", None) == "greedy"
        if not strategy.replayable or not greedy:
            raise MedusaError(f"replay measures greedy multi-head and tree strategies, not {key}")
    steps: dict[str, list[list[int]]] = {key: [[] for _ in rows] for key in strategies}
    from tqdm.auto import tqdm

    with tqdm(
        total=len(rows), desc=progress, unit="row", dynamic_ncols=True, disable=not progress
    ) as bar:
        for i, whole in _teacher_forced_whole(model, rows, batch_size):
            prompt, gen = rows[i]
            h = whole[len(prompt) - 1:]
            # the context drafter's cache over the whole row; a draft after p generated tokens sees
            # its first
            # len(prompt) - 1 + p positions, as the decode loop's cache holds then
            context = (
                DrafterContext.of_sequence(model.heads, whole, prompt + gen)
                if model.heads.needs_context
                else None
            )
            after = int(model.lm_head(h[-1]).argmax())
            for key, strategy in strategies.items():
                steps[key][i] = _accepted_steps(
                    _drafting_at(model, strategy, h, context, len(prompt) - 1),
                    gen,
                    after,
                    max_new_tokens,
                    stop_ids,
                )
            bar.update()
    return steps


def _drafting_at(
    model: MedusaModel,
    strategy: Strategy,
    hidden: torch.Tensor,
    context: DrafterContext | None = None,
    offset: int = 0,
) -> Callable[[int, int, int], Tree]:
    """The strategy's own draft at position p, from the teacher-forced hidden state there (and the
    context drafter's cache below it: ``offset`` + p positions)."""
    path_dependent = model.heads.path_dependent

    def draft(p: int, root: int, budget: int) -> Tree:
        logits = model.lm_head(hidden[p])
        heads = None if path_dependent or not strategy.num_heads else \
            model.project_heads(hidden[p], logits, strategy.num_heads)
        view = None if context is None else context.view(offset + p)
        state = DecodeState(
            logits,
            heads,
            _argmax=root,
            level_logits=model.level_drafter(hidden[p], view) if path_dependent else None,
        )
        return strategy.draft(state, budget)

    return draft


def _accepted_steps(draft_at: Callable[[int, int, int], Tree], generated: list[int], after: int,
                    max_new_tokens: int, stop_ids: set[int]) -> list[int]:
    """The decode loop's greedy steps over a known output; ``after`` is the base argmax after
    ``generated``."""
    seq = list(generated)
    if len(seq) < max_new_tokens:
        seq.append(after if after in stop_ids else min(stop_ids))
    steps: list[int] = []
    p = 0
    while p < max_new_tokens:
        budget = max_new_tokens - p
        if seq[p] in stop_ids:
            break
        if budget == 1:
            steps.append(1)
            break
        tree = draft_at(p, seq[p], budget)
        accepted = seq[p:p + max(1, _matched_depth(tree, seq[p:]))][:budget]
        steps.append(len(accepted))
        if any(t in stop_ids for t in accepted):
            break
        p += len(accepted)
    return steps


def head_topk_hits(ranked: RankedPositions, generated: list[int], ks: tuple[int, ...] = (1, 5)
                   ) -> tuple[torch.Tensor, int]:
    """Hits [len(ks), K] of each head's top-k on the generated text, over the positions where all
    heads have a target (head k at state p predicts generated[p + k + 1]), and that position count.
    """
    num_heads = ranked.head_ids.shape[0]
    n = len(generated) - num_heads  # states p = 0 .. n-1 have all K future tokens
    hits = torch.zeros(len(ks), num_heads, dtype=torch.long)
    if n <= 0:
        return hits, 0
    gen = torch.tensor(generated)
    for k in range(num_heads):
        target = gen[k + 1:k + 1 + n]
        top = ranked.head_ids[k, :n]
        for j, kk in enumerate(ks):
            hits[j, k] = (top[:, :kk] == target[:, None]).any(-1).sum()
    return hits, n
