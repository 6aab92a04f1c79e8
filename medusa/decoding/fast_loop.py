"""The fast engine's pipeline: prefill, then one fixed-shape step (draft → verify → accept → update
cache) that reads and writes only device buffers, so a CUDA graph can replay it; the host reads one
small tensor per step.

The host loop is :func:`medusa.decoding.loop.decode`, the same as the eager engine's (tokens,
per-step counts, stop rules); the differences are where the work happens. The committed length lives
in a device tensor, the cache never changes shape, drafting and acceptance are the strategy's
:class:`~medusa.decoding.fixed_tree.DevicePlan`, and a draft deeper than the remaining budget is
verified whole and cut by a device-side depth limit instead of being rebuilt smaller.
"""

from __future__ import annotations

from typing import Callable

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import DecodeState, GenerationResult, Strategy
from medusa.decoding.fixed_tree import DevicePlan, causal_prefill_mask
from medusa.decoding.loop import decode, depth_limit
from medusa.decoding.sampling import gumbel_draw
from medusa.decoding.static_cache import StaticKVCache
from medusa.model.drafter_context import ContextView


def prefill_bucket(length: int, capacity: int) -> int:
    """The padded length a ``length``-token prompt is prefilled at: a multiple of 32 below 256
    tokens, then of an eighth of the prompt's power of two (under 25 % padding), never past the
    cache. Few lengths, so few captures."""
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
    """``t[index]`` for a 0-d device index without turning it into a Python int (which would sync).
    """
    return t.index_select(0, index.view(1))[0]


class FastDecoder:
    """One strategy's step on one static cache. Buffers: the ``committed`` length, the ``max_depth``
    the next draft may reach, the base logits and last hidden state after the last committed token
    (``last_logits``, ``last_hidden``: what the next draft starts from), ``out``: [accepted
    length, next first token, accepted tokens…], and for a sampled decode ``noise``, the uniforms
    the next step draws with ([depth + 2, V], refilled before every prefill and step)."""

    def __init__(
        self,
        model: MedusaModel,
        plan: DevicePlan,
        cache: StaticKVCache,
        per_path: bool | None = None,
    ) -> None:
        """``per_path``: the plan drafts a path-dependent drafter depth by depth (default: whenever
        the model's drafter is path-dependent); False reads its heads along its own greedy path (the
        course reference)."""
        self.model, self.plan, self.cache = model, plan, cache
        drafter = model.heads
        path_dependent = drafter is not None and drafter.path_dependent
        self.per_path = path_dependent if per_path is None else per_path
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
        self.sampling = plan.sampling
        self.noise = (None if self.sampling is None else
                      torch.zeros(self.width + 1, vocab, dtype=torch.float32, device=device))
        # staged for a padded prefill
        self.prompt = torch.zeros(cache.capacity, dtype=torch.long, device=device)
        self.prompt_len = torch.zeros((), dtype=torch.long, device=device)
        self.context = bool(plan.num_heads) and drafter.needs_context and self.per_path
        if self.context:  # the drafter's keys/values per position: written as tokens are committed
            self.context_keys, self.context_values = drafter.new_context(cache.capacity)

    def _forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        last_only: bool = False,
    ):
        hidden = self.model._run_decoder(ids, self.cache, positions, mask).last_hidden_state[0]
        if last_only:
            hidden = hidden[-1]
        return hidden, self.model.lm_head(hidden)

    def _commit(self, hidden: torch.Tensor, logits: torch.Tensor, row: torch.Tensor | int) -> None:
        """Keep the state after the last accepted token; the next draft starts from it, and from
        the next first token: the argmax, or a draw with the uniforms' ``row`` (the accepted
        node's depth + 1; 0 after the prompt)."""
        self.last_hidden.copy_(hidden)
        self.last_logits.copy_(logits)
        if self.sampling is None:
            self.out[1].copy_(logits.argmax())
        else:
            uniforms = self.noise[row] if isinstance(row, int) else _row(self.noise, row)
            self.out[1].copy_(gumbel_draw(logits, uniforms, self.sampling))

    def _write_context(
        self, hidden: torch.Tensor, tokens: torch.Tensor, start: int | torch.Tensor
    ) -> None:
        """The context drafter's entries for positions start.. (hidden state there, token after it),
        in place. Entries past the committed length may be stale: drafts mask them, and later
        commits overwrite them."""
        slots = torch.as_tensor(start, device=self.committed.device) + torch.arange(
            hidden.shape[0], device=self.committed.device)
        k, v = self.model.heads.context_entries(hidden, tokens, slots)
        self.context_keys.index_copy_(1, slots, k)
        self.context_values.index_copy_(1, slots, v)

    def _check_fits(self, n: int) -> None:
        if n + self.plan.tree.size > self.cache.capacity:
            raise ValueError(
                f"a {n}-token prompt does not fit a static cache of {self.cache.capacity} slots"
            )

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
            hidden = self.model._run_decoder(
                ids, self.cache, positions[None], mask
            ).last_hidden_state[0]
            if n > 1:
                self._write_context(hidden[:-1], ids[0, 1:], 0)
            hidden = hidden[-1]
            logits = self.model.lm_head(hidden)
        else:
            hidden, logits = self._forward(ids, positions[None], mask, True)
        self.committed.fill_(n)
        self.out.zero_()
        self._commit(hidden, logits, 0)
        self.cache.length_hint = n

    def stage(self, prompt_ids: list[int]) -> int:
        """Copy the prompt into the device buffer that :meth:`prefill_padded` reads; returns its
        length."""
        n = len(prompt_ids)
        self._check_fits(n)
        self.prompt[:n].copy_(torch.tensor(prompt_ids, dtype=torch.long))
        self.prompt_len.fill_(n)
        self.cache.length_hint = 0
        return n

    def prefill_padded(self, bucket: int) -> None:
        """Prefill the staged prompt as ``bucket`` tokens (whatever follows the prompt in the buffer
        is padding).

        Causal attention keeps every prompt token blind to the padding after it; the padding's K/V
        rows land past the committed length, where masks hide them and the next step overwrites
        them. Only device tensors are touched, so one CUDA graph per bucket serves every prompt
        length in it.
        """
        positions = self.columns[:bucket]
        self.cache.write_slots = positions
        mask = causal_prefill_mask(bucket, self.columns, self.dtype)
        hidden = self.model._run_decoder(
            self.prompt[:bucket][None], self.cache, positions[None], mask
        )
        last = _row(hidden.last_hidden_state[0], self.prompt_len - 1)
        # (the rows past the prompt are padding: masked until overwritten)
        if self.context and bucket > 1:
            self._write_context(hidden.last_hidden_state[0, :bucket - 1], self.prompt[1:bucket], 0)
        self.committed.copy_(self.prompt_len)
        self.out.zero_()
        self._commit(last, self.model.lm_head(last), 0)

    def draft(self) -> torch.Tensor:
        """The next verify's [N] tokens, from the heads (or drafter) at the last committed state;
        device-only, so tools/bench_decode.py can capture and time it alone (the drafting share of a
        step)."""
        plan = self.plan
        if not plan.num_heads:
            heads = None
        # below the committed positions' entries (the draft starts at the last one)
        elif self.context:
            heads = self.model.level_drafter(
                self.last_hidden,
                ContextView(self.context_keys, self.context_values, self.committed - 1),
            )
        elif self.per_path:  # drafted depth by depth: the plan asks for each path's logits
            heads = self.model.level_drafter(self.last_hidden)
        else:
            heads = self.model.project_heads(self.last_hidden, self.last_logits, plan.num_heads)
        return plan.draft(self.last_logits, heads, self.max_depth, self.out[1])

    def step(self) -> None:
        """Draft, verify the draft in one forward, accept on the device, move the accepted K/V rows
        into place.

        Only device tensors are read and written (no ``.item()``, no host tensors), which is what
        lets :class:`~medusa.decoding.engine.StaticEngine` capture it once and replay it every step.
        """
        tree, committed, plan = self.plan.tree, self.committed, self.plan
        root = self.out[1]  # read by the draft and the rule before _commit rewrites it
        tokens = self.draft()
        self.cache.write_slots = committed + self.node_offsets
        positions = (committed + tree.depth)[None]
        hidden, logits = self._forward(
            tokens[None], positions, tree.mask(committed, self.columns, self.dtype)
        )
        best = plan.select(
            tree, self.last_logits, logits, tokens, self.max_depth, root, self.noise
        )
        path = _row(tree.path, best)
        length = _row(tree.depth, best) + 1
        if self.width > 1:
            self.cache.compact(committed, path)
        # positions committed-1 ..: the last start, then the accepted path (its tail is stale)
        if self.context:
            below = torch.cat([self.last_hidden[None], hidden.index_select(0, path[:-1])])
            self._write_context(below, tokens.index_select(0, path), committed - 1)
        committed.add_(length)
        self.out[0].copy_(length)
        self.out[2:].copy_(tokens.index_select(0, path))
        self._commit(_row(hidden, best), _row(logits, best), length)

    def read(self) -> list[int]:
        """The ``out`` buffer on the host: the one synchronisation per step."""
        return self.out.tolist()

    def set_depth_limit(self, limit: int) -> None:
        if limit != self.depth_limit_host:
            self.max_depth.fill_(limit)
            self.depth_limit_host = limit


class FastStepper:
    """:class:`FastDecoder` as a :class:`~medusa.decoding.stepper.Stepper`: ``run_step`` replays the
    captured step and ``run_prefill`` the captured prefill (defaults: run them eagerly, the prompt
    at its own length). The host reads one small tensor per step (:meth:`FastDecoder.read`)."""

    def __init__(self, decoder: FastDecoder, run_step: Callable[[], None] | None = None,
                 run_prefill: Callable[[list[int]], None] | None = None) -> None:
        self.decoder = decoder
        self.run_step = run_step or decoder.step
        self.run_prefill = run_prefill or decoder.prefill

    def prefill(
        self, strategy: Strategy, prompt_ids: list[int], generated: list[int]
    ) -> DecodeState:
        self._draw(strategy, 1)
        self.run_prefill(prompt_ids)
        self.out = self.decoder.read()
        return self.advance(DecodeState(self.decoder.last_logits, None, generated))

    def _draw(self, strategy: Strategy, rows: int | None) -> None:
        """A sampled decode's next uniforms, in the rows the coming prefill or step reads (the
        eager step draws the same blocks: :class:`~medusa.decoding.sampling.Sampler`)."""
        if self.decoder.noise is not None:
            assert rows <= len(self.decoder.noise), "the draws outgrow the layout's depth"
            strategy.sampler.fill(self.decoder.noise[:rows])

    def step(self, strategy: Strategy, state: DecodeState, reach: int) -> tuple[list[int], int]:
        """A draft deeper than ``reach`` (or than the strategy's adaptive depth) is verified whole;
        a device-side depth limit keeps its deeper nodes from acceptance. The strategy observes what
        the device accepted, as its host-side ``accept`` does in the eager step."""
        decoder = self.decoder
        limit = depth_limit(decoder.plan.tree.max_depth, strategy, reach)
        decoder.set_depth_limit(limit)
        self._draw(strategy, strategy.sampler and strategy.sampler.rows)
        self.run_step()
        self.out = out = decoder.read()
        strategy.observe(out[0])
        decoder.cache.length_hint += out[0]
        return out[2 : 2 + out[0]], limit + 1

    def advance(self, state: DecodeState) -> DecodeState:
        if self.decoder.noise is None:
            return DecodeState(self.decoder.last_logits, None, state.generated, _argmax=self.out[1])
        return DecodeState(self.decoder.last_logits, None, state.generated, drawn=self.out[1])


def generate_fast(
    decoder: FastDecoder,
    strategy: Strategy,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    run_step: Callable[[], None] | None = None,
    run_prefill: Callable[[list[int]], None] | None = None,
) -> GenerationResult:
    """:func:`~medusa.decoding.loop.decode` with the fast step (see :class:`FastStepper` for the two
    runners)."""
    return decode(
        FastStepper(decoder, run_step, run_prefill), strategy, prompt_ids, max_new_tokens, stop_ids
    )
