"""The fast engine's step for B sequences at once: each row drafts its own tree, all B × N nodes are
verified in one forward (per-row tree masks and positions), each row accepts on the device and keeps
its own accepted path in the cache.

A strategy's :class:`~medusa.decoding.fixed_tree.DevicePlan` is written for one sequence; here its
``draft`` and ``select`` run under :func:`torch.vmap`, which turns the same tensor code into batched
kernels, so a strategy needs no batched version of its own and a row decodes exactly as it would
alone. Prompts are prefilled one at a time by a one-row
:class:`~medusa.decoding.fast_loop.FastDecoder` (its captured prefill buckets) and copied into a
free row (:meth:`BatchDecoder.admit`): rows that finish are refilled while the others go on. Like
the one-row step, :meth:`BatchDecoder.step` touches only device tensors, so a CUDA graph per (B,
tree size) replays it, and the host reads one [B, 2 + depth] tensor per step.
"""

from __future__ import annotations

import warnings

import torch

from medusa.decoding.fast_loop import FastDecoder
from medusa.decoding.fixed_tree import DevicePlan
from medusa.decoding.sampling import gumbel_draw
from medusa.decoding.static_cache import StaticKVCache
from medusa.model import MedusaModel


# on the CPU torch.vmap runs a drafter's attention row by row (no batching rule): right, only slower
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")


class BatchDecoder:
    """One strategy's step on a static cache of ``cache.batch`` rows. Buffers, one row per
    sequence: ``committed`` lengths, ``max_depth`` each row's next draft may reach, ``active``
    (idle rows compute but never move), the base logits and hidden state after each row's last
    committed token, ``out`` [B, 2 + depth]: [accepted length, next first token, accepted tokens…],
    and for a sampled decode ``noise`` [B, depth + 2, V], each row's uniforms for the next step."""

    def __init__(self, model: MedusaModel, plan: DevicePlan, cache: StaticKVCache,
                 row: FastDecoder) -> None:
        """``row``: the one-row decoder (same plan and capacity) that prefills each prompt."""
        if row.context:
            raise ValueError("a drafter with its own context decodes one row at a time")
        self.model, self.plan, self.cache, self.row = model, plan, cache, row
        self.per_path = row.per_path
        device, tree, batch = model.device, plan.tree, cache.batch
        self.batch, self.width = batch, tree.max_depth + 1
        self.dtype = model.dtype
        self.columns = torch.arange(cache.capacity, device=device)
        self.node_offsets = torch.arange(tree.size, device=device)
        self.rows = torch.arange(batch, device=device)
        self.committed = torch.zeros(batch, dtype=torch.long, device=device)
        self.max_depth = torch.full((batch,), tree.max_depth, dtype=torch.long, device=device)
        self.depth_limits = [tree.max_depth] * batch  # the host's copy of max_depth
        self.active = torch.zeros(batch, dtype=torch.bool, device=device)
        vocab, hidden = model.lm_head.weight.shape
        self.last_logits = torch.zeros(batch, vocab, dtype=self.dtype, device=device)
        self.last_hidden = torch.zeros(batch, hidden, dtype=self.dtype, device=device)
        self.out = torch.zeros(batch, 2 + self.width, dtype=torch.long, device=device)
        self.sampling = plan.sampling
        self.noise = (None if self.sampling is None else torch.zeros(
            batch, self.width + 1, vocab, dtype=torch.float32, device=device))

    def _draft_row(self, hidden, logits, max_depth, root):
        plan = self.plan
        if not plan.num_heads:
            heads = None
        elif self.per_path:
            heads = self.model.level_drafter(hidden)
            heads.check_prefixes = False  # a host comparison cannot run under vmap
        else:
            heads = self.model.project_heads(hidden, logits, plan.num_heads)
        return plan.draft(logits, heads, max_depth, root)

    def draft(self) -> torch.Tensor:
        """[B, N] tokens: each row's draft from its last committed state."""
        return torch.vmap(self._draft_row)(
            self.last_hidden, self.last_logits, self.max_depth, self.out[:, 1]
        )

    def _select(self, tokens: torch.Tensor, logits: torch.Tensor, root: torch.Tensor):
        plan, tree = self.plan, self.plan.tree
        if self.noise is None:
            return torch.vmap(
                lambda last, lg, tok, depth, r: plan.select(tree, last, lg, tok, depth, r, None)
            )(self.last_logits, logits, tokens, self.max_depth, root)
        return torch.vmap(
            lambda last, lg, tok, depth, r, u: plan.select(tree, last, lg, tok, depth, r, u)
        )(self.last_logits, logits, tokens, self.max_depth, root, self.noise)

    def step(self) -> None:
        """Draft per row, verify all rows in one forward, accept per row, move each row's accepted
        K/V rows into place; device tensors only (capturable)."""
        tree, committed = self.plan.tree, self.committed
        root = self.out[:, 1]  # read by the draft and the rule before _next_first rewrites it
        tokens = self.draft()
        self.cache.write_slots = committed[:, None] + self.node_offsets
        positions = committed[:, None] + tree.depth
        mask = tree.mask(committed, self.columns, self.dtype)
        hidden = self.model._run_decoder(tokens, self.cache, positions, mask).last_hidden_state
        logits = self.model.lm_head(hidden)
        best = self._select(tokens, logits, root)
        paths = tree.path.index_select(0, best)
        length = (tree.depth.index_select(0, best) + 1) * self.active
        if self.width > 1:
            self.cache.compact_rows(committed, paths)
        committed.add_(length)
        self.out[:, 0].copy_(length)
        self.out[:, 2:].copy_(tokens.gather(1, paths))
        self.last_hidden.copy_(hidden[self.rows, best])
        self.last_logits.copy_(logits[self.rows, best])
        self._next_first(length)

    def _next_first(self, length: torch.Tensor) -> None:
        """Each row's next first token: the argmax of its last logits, or a draw with its
        uniforms' row ``length`` (the accepted node's depth + 1)."""
        if self.sampling is None:
            self.out[:, 1].copy_(self.last_logits.argmax(-1))
        else:
            uniforms = self.noise[self.rows, length]
            self.out[:, 1].copy_(gumbel_draw(self.last_logits, uniforms, self.sampling))

    def admit(self, b: int, length: int) -> None:
        """Row ``b`` takes the prompt the one-row decoder has just prefilled (``length`` tokens):
        its cache rows, committed length, last state and first token."""
        row = self.row
        self.cache.copy_row(b, row.cache, length)
        self.committed[b].copy_(row.committed)
        self.last_logits[b].copy_(row.last_logits)
        self.last_hidden[b].copy_(row.last_hidden)
        self.out[b].copy_(row.out)
        self.active[b] = True

    def release(self, b: int) -> None:
        """Row ``b`` idles: its steps still run (the shapes are fixed) but commit nothing."""
        self.active[b] = False

    def reset_for_capture(self) -> None:
        """A state every warm-up and captured run may start from: 4 committed slots per row."""
        self.committed.fill_(4)

    def set_depth_limits(self, limits: list[int]) -> None:
        """Each row's deepest acceptable node; copied to the device only when one changed."""
        if limits != self.depth_limits:
            self.max_depth.copy_(torch.tensor(limits, dtype=torch.long))
            self.depth_limits = list(limits)

    def read(self) -> list[list[int]]:
        """The ``out`` buffer on the host: the one synchronisation per step."""
        return self.out.tolist()
