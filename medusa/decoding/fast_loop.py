"""The fast engine's pipeline: prefill, then one fixed-shape step (draft → verify → accept → update cache) that reads
and writes only device buffers, so a CUDA graph can replay it; the host reads one small tensor per step.

Same contract as :func:`medusa.decoding.loop.generate` (tokens, per-step counts, stop rules); the differences are
where the work happens. The committed length lives in a device tensor, the cache never changes shape, drafting and
acceptance are the strategy's :class:`~medusa.decoding.fixed_tree.DevicePlan`, and a draft deeper than the
remaining budget is verified whole and cut by a device-side depth limit instead of being rebuilt smaller.
"""

from __future__ import annotations

from typing import Callable

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import DecodeState, GenerationResult, Strategy
from medusa.decoding.fixed_tree import DevicePlan, causal_prefill_mask
from medusa.decoding.static_cache import StaticKVCache
from medusa.model.drafter_context import ContextView


def prefill_bucket(length: int, capacity: int) -> int:
    """The padded length a ``length``-token prompt is prefilled at: a multiple of 32 below 256 tokens, then of an
    eighth of the prompt's power of two (under 25 % padding), never past the cache. Few lengths, so few captures."""
    step = max(32, 1 << max(0, length.bit_length() - 3))
    return min(-(-length // step) * step, capacity)


def prefill_buckets(max_length: int, capacity: int) -> list[int]:
    """Every bucket a prompt of 1..``max_length`` tokens can land in."""
    buckets, length = [], 1
    while length <= max_length:
        bucket = prefill_bucket(length, capacity)
        buckets.append(bucket)
        length = bucket + 1
    return buckets


def _row(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` for a 0-d device index without turning it into a Python int (which would sync)."""
    return t.index_select(0, index.view(1))[0]


class FastDecoder:
    """One strategy's step on one static cache. Buffers: the ``committed`` length, the ``max_depth`` the next
    draft may reach, the base logits and last hidden state after the last committed token (``last_logits``,
    ``last_hidden``: what the next draft starts from) and ``out``: [accepted length, next argmax, accepted tokens…]."""

    def __init__(self, model: MedusaModel, plan: DevicePlan, cache: StaticKVCache, per_path: bool | None = None
                 ) -> None:
        """``per_path``: the plan drafts a path-dependent drafter depth by depth (default: whenever the model's
        drafter is path-dependent); False reads its heads along its own greedy path (the course reference)."""
        self.model, self.plan, self.cache = model, plan, cache
        self.per_path = model.path_dependent_heads if per_path is None else per_path
        device, tree = model.device, plan.tree
        self.dtype = model.dtype
        self.width = tree.max_depth + 1
        self.columns = torch.arange(cache.capacity, device=device)
        self.node_offsets = torch.arange(tree.size, device=device)
        self.committed = torch.zeros((), dtype=torch.long, device=device)
        self.max_depth = torch.full((), tree.max_depth, dtype=torch.long, device=device)
        self.depth_limit_host = tree.max_depth
        vocab, hidden = model.lm_head.weight.shape
        self.last_logits = torch.zeros(vocab, dtype=self.dtype, device=device)
        self.last_hidden = torch.zeros(hidden, dtype=self.dtype, device=device)
        self.out = torch.zeros(2 + self.width, dtype=torch.long, device=device)
        self.prompt = torch.zeros(cache.capacity, dtype=torch.long, device=device)  # staged for a padded prefill
        self.prompt_len = torch.zeros((), dtype=torch.long, device=device)
        self.context = bool(plan.num_heads) and model.context_drafter and self.per_path
        if self.context:  # the context drafter's keys/values per position: written as tokens are committed
            drafter = model.heads.drafter
            weight = drafter.fc.weight
            shape = (drafter.num_attention_heads, cache.capacity, weight.shape[0] // drafter.num_attention_heads)
            self.context_keys = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
            self.context_values = torch.zeros(shape, dtype=weight.dtype, device=weight.device)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, last_only: bool = False):
        hidden = self.model._run_decoder(ids, self.cache, positions, mask).last_hidden_state[0]
        if last_only:
            hidden = hidden[-1]
        return hidden, self.model.lm_head(hidden)

    def _commit(self, hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep the state after the last accepted token; the next draft starts from it."""
        self.last_hidden.copy_(hidden)
        self.last_logits.copy_(logits)
        self.out[1].copy_(logits.argmax())

    def _write_context(self, hidden: torch.Tensor, tokens: torch.Tensor, start: int | torch.Tensor) -> None:
        """The context drafter's entries for positions start.. (hidden state there, token after it), in place.
        Entries past the committed length may be stale: drafts mask them, and later commits overwrite them."""
        slots = torch.as_tensor(start, device=self.committed.device) + torch.arange(
            hidden.shape[0], device=self.committed.device)
        k, v = self.model.heads.context_entries(hidden, tokens, slots)
        self.context_keys.index_copy_(1, slots, k)
        self.context_values.index_copy_(1, slots, v)

    def _check_fits(self, n: int) -> None:
        if n + self.plan.tree.size > self.cache.capacity:
            raise ValueError(f"a {n}-token prompt does not fit a static cache of {self.cache.capacity} slots")

    def prefill(self, prompt_ids: list[int]) -> None:
        """Run the prompt at its own length (uncapturable: the shapes vary with the prompt)."""
        device = self.committed.device
        n = len(prompt_ids)
        self._check_fits(n)
        positions = torch.arange(n, device=device)
        self.cache.write_slots = positions
        self.cache.length_hint = 0
        mask = causal_prefill_mask(n, self.columns, self.dtype)
        ids = torch.tensor([prompt_ids], device=device)
        if self.context:  # every prompt position's hidden state feeds the drafter's context
            hidden = self.model._run_decoder(ids, self.cache, positions[None], mask).last_hidden_state[0]
            if n > 1:
                self._write_context(hidden[:-1], ids[0, 1:], 0)
            hidden = hidden[-1]
            logits = self.model.lm_head(hidden)
        else:
            hidden, logits = self._forward(ids, positions[None], mask, True)
        self.committed.fill_(n)
        self.out.zero_()
        self._commit(hidden, logits)
        self.cache.length_hint = n

    def stage(self, prompt_ids: list[int]) -> int:
        """Copy the prompt into the device buffer that :meth:`prefill_padded` reads; returns its length."""
        n = len(prompt_ids)
        self._check_fits(n)
        self.prompt[:n].copy_(torch.tensor(prompt_ids, dtype=torch.long))
        self.prompt_len.fill_(n)
        self.cache.length_hint = 0
        return n

    def prefill_padded(self, bucket: int) -> None:
        """Prefill the staged prompt as ``bucket`` tokens (whatever follows the prompt in the buffer is padding).

        Causal attention keeps every prompt token blind to the padding after it; the padding's K/V rows land past
        the committed length, where masks hide them and the next step overwrites them. Only device tensors are
        touched, so one CUDA graph per bucket serves every prompt length in it.
        """
        positions = self.columns[:bucket]
        self.cache.write_slots = positions
        mask = causal_prefill_mask(bucket, self.columns, self.dtype)
        hidden = self.model._run_decoder(self.prompt[:bucket][None], self.cache, positions[None], mask)
        last = _row(hidden.last_hidden_state[0], self.prompt_len - 1)
        if self.context and bucket > 1:  # (the rows past the prompt are padding: masked until overwritten)
            self._write_context(hidden.last_hidden_state[0, :bucket - 1], self.prompt[1:bucket], 0)
        self.committed.copy_(self.prompt_len)
        self.out.zero_()
        self._commit(last, self.model.lm_head(last))

    def draft(self) -> torch.Tensor:
        """The next verify's [N] tokens, from the heads (or drafter) at the last committed state; device-only, so
        tools/bench_decode.py can capture and time it alone (the drafting share of a step)."""
        plan = self.plan
        if not plan.num_heads:
            heads = None
        elif self.context:  # below the committed positions' entries (the draft starts at the last one)
            heads = self.model.level_drafter(self.last_hidden, ContextView(self.context_keys, self.context_values,
                                                                           self.committed - 1))
        elif self.per_path:  # drafted depth by depth: the plan asks for each path's logits
            heads = self.model.level_drafter(self.last_hidden)
        else:
            heads = self.model.project_heads(self.last_hidden, self.last_logits, plan.num_heads)
        return plan.draft(self.last_logits, heads, self.max_depth)

    def step(self) -> None:
        """Draft, verify the draft in one forward, accept on the device, move the accepted K/V rows into place.

        Only device tensors are read and written (no ``.item()``, no host tensors), which is what lets
        :class:`~medusa.decoding.engine.StaticEngine` capture it once and replay it every step.
        """
        tree, committed, plan = self.plan.tree, self.committed, self.plan
        tokens = self.draft()
        self.cache.write_slots = committed + self.node_offsets
        positions = (committed + tree.depth)[None]
        hidden, logits = self._forward(tokens[None], positions, tree.mask(committed, self.columns, self.dtype))
        best = plan.select(tree, self.last_logits, logits, tokens, self.max_depth)
        path = _row(tree.path, best)
        length = _row(tree.depth, best) + 1
        if self.width > 1:
            self.cache.compact(committed, path)
        if self.context:  # positions committed-1 ..: the last start, then the accepted path (its tail is stale)
            below = torch.cat([self.last_hidden[None], hidden.index_select(0, path[:-1])])
            self._write_context(below, tokens.index_select(0, path), committed - 1)
        committed.add_(length)
        self.out[0].copy_(length)
        self.out[2:].copy_(tokens.index_select(0, path))
        self._commit(_row(hidden, best), _row(logits, best))

    def read(self) -> list[int]:
        """The ``out`` buffer on the host: the one synchronisation per step."""
        return self.out.tolist()

    def set_depth_limit(self, limit: int) -> None:
        if limit != self.depth_limit_host:
            self.max_depth.fill_(limit)
            self.depth_limit_host = limit


@torch.inference_mode()
def generate_fast(decoder: FastDecoder, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
                  stop_ids: set[int], run_step: Callable[[], None] | None = None,
                  run_prefill: Callable[[list[int]], None] | None = None) -> GenerationResult:
    """The host side of the fast loop; ``run_step`` replays the captured step and ``run_prefill`` the captured
    prefill (defaults: run them eagerly, the prompt at its own length).

    Stop and length rules, and the statistics, follow :func:`medusa.decoding.loop.generate` line for line.
    """
    run_step = run_step or decoder.step
    (run_prefill or decoder.prefill)(prompt_ids)
    out = decoder.read()
    deepest = decoder.plan.tree.max_depth
    generated: list[int] = []
    accepted: list[int] = []
    drafted: list[int] = []
    while True:
        budget = max_new_tokens - len(generated)
        if budget <= 0:
            return GenerationResult(generated, accepted, "length", drafted)
        state = DecodeState(decoder.last_logits, None, generated, _argmax=out[1])
        first = strategy.first_token(state)
        if first is not None and (first in stop_ids or budget == 1):  # decided without another forward
            if first in stop_ids:
                return GenerationResult(generated, accepted, "eos", drafted)
            generated.append(first)
            accepted.append(1)
            drafted.append(1)
            return GenerationResult(generated, accepted, "length", drafted)
        limit = deepest if strategy.whole_candidates else min(deepest, budget - 1)
        wanted = strategy.depth_limit()
        if wanted is not None:
            limit = min(limit, wanted)
        decoder.set_depth_limit(limit)
        drafted.append(limit + 1)
        run_step()
        out = decoder.read()
        strategy.observe(out[0])
        tokens = out[2 : 2 + out[0]][:budget]
        for j, t in enumerate(tokens):
            if t in stop_ids:  # the stop counts as accepted; drafted tokens past it were never output
                accepted.append(j + 1)
                return GenerationResult(generated, accepted, "eos", drafted)
            generated.append(t)
        accepted.append(len(tokens))
        decoder.cache.length_hint += out[0]
