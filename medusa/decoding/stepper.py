"""What the host loop drives: a stepper runs one draft → verify → accept → update-cache step at a
time.

:func:`medusa.decoding.loop.decode` owns the budget, the stop rules and the statistics; a stepper
owns where the work happens. :class:`EagerStepper` here is the reference: a dynamic cache and the
strategy's host-side ``draft`` and ``accept``. The fast engine's stepper
(:class:`~medusa.decoding.fast_loop.FastStepper`) runs the same step as fixed-shape device work.
"""

from __future__ import annotations

from typing import Protocol

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.cache import keep_path, new_cache
from medusa.decoding.verify import verify


class Stepper(Protocol):
    """One decode at a time: ``prefill``, then ``step`` (and ``advance`` while the loop goes on)."""

    def prefill(
        self, strategy: Strategy, prompt_ids: list[int], generated: list[int]
    ) -> DecodeState:
        """Run the prompt; the state after it. ``generated`` is the loop's output list (the state
        shares it)."""

    def step(self, strategy: Strategy, state: DecodeState, reach: int) -> tuple[list[int], int]:
        """Draft at most ``reach`` tokens deep along any path, verify, accept, keep the accepted
        path's cache. Returns the accepted path's tokens (the loop cuts them to its budget) and the
        drafted depth."""

    def advance(self, state: DecodeState) -> DecodeState:
        """The state after the last step's accepted path."""


class EagerStepper:
    """The reference step on any device. After each accepted path the drafter is asked for the next
    head logits (path-dependent drafters: a function drafting depth by depth, reading the drafter's
    context if it keeps one)."""

    def __init__(self, model: MedusaModel) -> None:
        self.model = model

    def prefill(
        self, strategy: Strategy, prompt_ids: list[int], generated: list[int]
    ) -> DecodeState:
        model = self.model
        self.num_heads = strategy.num_heads
        drafter = model.heads  # asked what it needs: drafts by path, a context beside the cache
        self.per_path = bool(strategy.num_heads) and drafter.path_dependent and strategy.by_path
        self.context = model.drafter_context() if self.per_path and drafter.needs_context else None
        self.cache = new_cache(model.base_model)
        self.prefix_len = len(prompt_ids)
        ids = torch.tensor([prompt_ids], device=model.device)
        out = model.step(ids, self.cache, num_heads=0 if self.per_path else strategy.num_heads,
                         last_only=True, all_hidden=self.context is not None)
        self.last_hidden = out.hidden[0, -1]
        if self.context is not None:  # the prompt's positions 0..L-2 (the draft starts at L-1)
            self.context.append(out.hidden[0, :-1], prompt_ids[1:], 0)
        heads = out.head_logits[:, 0, -1] if out.head_logits is not None else None
        return DecodeState(out.logits[0, -1], heads, generated, level_logits=self._levels())

    def step(self, strategy: Strategy, state: DecodeState, reach: int) -> tuple[list[int], int]:
        tree = strategy.draft(state, reach)
        verified = verify(self.model, self.cache, self.prefix_len, tree)
        path = strategy.accept(state, tree, verified)
        keep_path(self.cache, self.prefix_len, path)
        self.prefix_len += len(path)
        self._last: tuple[Tree, Verified, list[int]] = (tree, verified, path)
        return [tree.tokens[i] for i in path], max(tree.depths) + 1

    def advance(self, state: DecodeState) -> DecodeState:
        tree, verified, path = self._last
        last = path[-1]
        # the committed positions below the next draft: the last start, the path
        if self.context is not None:
            below = torch.tensor(path[:-1], dtype=torch.long, device=verified.hidden.device)
            self.context.append(torch.cat([self.last_hidden[None], verified.hidden[below]]),
                                [tree.tokens[i] for i in path], self.prefix_len - len(path) - 1)
        self.last_hidden = verified.hidden[last]
        heads = (self.model.project_heads(self.last_hidden, verified.logits[last], self.num_heads)
                 if self.num_heads and not self.per_path else None)
        state.advance(verified.logits[last], heads, self._levels(), verified.bonus)
        return state

    def _levels(self):
        """Per-path head logits at the last hidden state for path-dependent drafters (drafted depth
        by depth: their per-head logits along one greedy chain would be computed for nothing); None
        for the others."""
        if not self.per_path:
            return None
        return self.model.level_drafter(
            self.last_hidden, None if self.context is None else self.context.view()
        )
