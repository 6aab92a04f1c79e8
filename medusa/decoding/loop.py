"""The decoding pipeline shared by all strategies: prefill, then draft → verify → accept → update cache."""

from __future__ import annotations

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import DecodeState, GenerationResult, Strategy
from medusa.decoding.cache import keep_path, new_cache
from medusa.decoding.verify import verify

UNLIMITED = 1 << 30  # the budget a draft of whole candidates is drafted with (cut to the real budget afterwards)


@torch.inference_mode()
def generate(
    model: MedusaModel, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int, stop_ids: set[int]
) -> GenerationResult:
    """Generated ids only (no prompt, no stop token), at most ``max_new_tokens`` of them."""
    cache = new_cache(model.base_model)
    ids = torch.tensor([prompt_ids], device=model.device)
    path_dependent = bool(strategy.num_heads) and model.path_dependent_heads and strategy.by_path
    context = model.drafter_context() if path_dependent and model.context_drafter else None
    out = model.step(ids, cache, num_heads=0 if path_dependent else strategy.num_heads, last_only=True,
                     all_hidden=context is not None)
    last_hidden = out.hidden[0, -1]
    if context is not None:  # the prompt's positions 0..L-2 (the draft starts at L-1)
        context.append(out.hidden[0, :-1], prompt_ids[1:], 0)
    state = DecodeState(out.logits[0, -1], out.head_logits[:, 0, -1] if out.head_logits is not None else None,
                        level_logits=_levels(model, path_dependent, last_hidden, context))
    prefix_len = len(prompt_ids)
    accepted: list[int] = []
    drafted: list[int] = []
    while True:
        budget = max_new_tokens - len(state.generated)
        if budget <= 0:
            return GenerationResult(state.generated, accepted, "length", drafted)
        first = strategy.first_token(state)
        if first is not None and (first in stop_ids or budget == 1):  # decided without another forward
            if first in stop_ids:
                return GenerationResult(state.generated, accepted, "eos", drafted)
            state.generated.append(first)
            accepted.append(1)
            drafted.append(1)
            return GenerationResult(state.generated, accepted, "length", drafted)
        tree = strategy.draft(state, UNLIMITED if strategy.whole_candidates else budget)
        drafted.append(max(tree.depths) + 1)
        verified = verify(model, cache, prefix_len, tree)
        path = strategy.accept(state, tree, verified)
        keep_path(cache, prefix_len, path)
        prefix_len += len(path)
        tokens = [tree.tokens[i] for i in path][:budget]
        for j, t in enumerate(tokens):
            if t in stop_ids:  # the stop counts as accepted; drafted tokens past it were never output
                accepted.append(j + 1)
                return GenerationResult(state.generated, accepted, "eos", drafted)
            state.generated.append(t)
        accepted.append(len(tokens))
        last = path[-1]
        if context is not None:  # the committed positions below the next draft: the last start, then the path
            below = torch.tensor(path[:-1], dtype=torch.long, device=verified.hidden.device)
            context.append(torch.cat([last_hidden[None], verified.hidden[below]]), [tree.tokens[i] for i in path],
                           prefix_len - len(path) - 1)
        last_hidden = verified.hidden[last]
        heads = (model.project_heads(last_hidden, verified.logits[last], strategy.num_heads)
                 if strategy.num_heads and not path_dependent else None)
        state.advance(verified.logits[last], heads, _levels(model, path_dependent, last_hidden, context))


def _levels(model: MedusaModel, path_dependent: bool, hidden: torch.Tensor, context=None):
    """Per-path head logits at ``hidden`` for path-dependent drafters (drafted depth by depth; their per-head
    logits along one greedy chain would be computed for nothing); None for the others. The context drafter also
    reads its ``context`` (:class:`~medusa.model.drafter_context.DrafterContext`) up to the draft's start."""
    if not path_dependent:
        return None
    return model.level_drafter(hidden, None if context is None else context.view())
