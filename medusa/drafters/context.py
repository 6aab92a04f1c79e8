"""The context drafter: the autoregressive drafter's layer (autoregressive.py) attending over the
whole context, as EAGLE's drafter does, instead of over its draft path only.

Position i of the context holds the layer's keys and values for the input
``fc([f_i; embed(t_{i+1})])``: the base model's last hidden state after token i and the token that
follows it. A draft from committed position p starts with that input at p and attends over
positions 0..p, then over its own path: depth j's input is ``fc([ĥ_{p+j}; embed(t_{p+j+1})])`` at
position p + j, where ĥ is the layer's own prediction. With one layer, position i's keys and
values depend on position i's input alone, so the context is a cache filled once per committed
token (:class:`~medusa.model.drafter_context.DrafterContext`), and training over a whole sequence
(:meth:`ContextDraftLayer.rollout`) gives every depth's prediction at every position in K passes.

Positions are rotary (RoPE over absolute positions), since a context has no fixed length; a
translation that copies content from its source needs to find it there, which a path-only drafter,
fed the source through one hidden state, cannot do. A fresh layer still predicts its input hidden
state (residual branches at zero, the input projection passing the hidden state through), so a fresh
context drafter repeats the base model's next-token distribution.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medusa.drafters.autoregressive import AutoregressiveDrafter, DraftLayer
from medusa.drafters.base import register
from medusa.errors import MedusaError

ROPE_BASE = 10000.0


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE on ``x`` [..., n, d] at ``positions`` [n] (or broadcastable to x's leading dims + n)."""
    d = x.shape[-1]
    inv = ROPE_BASE ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(x.device, torch.float32)[..., None] * inv  # [..., n, d/2]
    cos = torch.cat([angles.cos()] * 2, -1).to(x.dtype)
    sin = torch.cat([angles.sin()] * 2, -1).to(x.dtype)
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class ContextDraftLayer(DraftLayer):
    """RMSNorm → attention over context + path (RoPE) → RMSNorm → SwiGLU MLP, with residuals."""

    def __init__(self, hidden_size: int, num_attention_heads: int) -> None:
        super().__init__(hidden_size, num_attention_heads, learned_positions=False)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[..., n, H] → q, k, v [..., heads, n, d]."""
        qkv = self.qkv(self.attn_norm(x)).unflatten(-1, (3, self.num_attention_heads, -1))
        q, k, v = qkv.unbind(-3)
        return q.transpose(-2, -3), k.transpose(-2, -3), v.transpose(-2, -3)

    def keys_values(self, x: torch.Tensor, positions: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (rotated) and values [..., heads, n, d] of inputs ``x`` [..., n, H] at
        ``positions`` [n]."""
        _, k, v = self._split(x)
        return rotate(k, positions), v

    def entries(self, hidden: torch.Tensor, token_embeddings: torch.Tensor, positions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's keys and values [heads, m, d] at ``positions`` [m]: the base model's hidden
        states there [m, H] and the embeddings of the tokens after them [m, H]."""
        return self.keys_values(self.inputs(hidden, token_embeddings), positions)

    def path_step(self, x: torch.Tensor, depth: int, path: tuple[torch.Tensor, torch.Tensor] | None,
                  context=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`step` below ``context`` (a :class:`~medusa.model.drafter_context.ContextView`; the
        draft starts at its position): the interface both drafter layers share."""
        if context is None:
            raise MedusaError("the context drafter drafts below a context: pass the "
                              "DrafterContext's view (MedusaModel.level_drafter(hidden, context))")
        return self.step(x, context.position, depth, (context.keys, context.values), path)

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual attention output ([..., heads, n, d] → [..., n, H]) and the MLP."""
        return self._mlp(x + self.out(attended.transpose(-2, -3).flatten(-2)))

    def step(self, x: torch.Tensor, start: int | torch.Tensor, depth: int,
             context: tuple[torch.Tensor, torch.Tensor] | None,
             path: tuple[torch.Tensor, torch.Tensor] | None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One draft level: inputs ``x`` [N, H] at position ``start`` + ``depth``, each row
        attending over ``context`` (keys, values [heads, C, d], shared by all rows; only the
        positions below ``start`` count, so a static buffer longer than the context serves) and its
        own ``path`` (keys, values [N, heads, depth, d], the earlier levels, or None). ``start``
        may be a 0-d device tensor (inside a captured step). Returns the predictions [N, H] and the
        path through this level."""
        q, k, v = self._split(x[:, None])  # [N, heads, 1, d]
        pos = (torch.as_tensor(start, device=x.device) + depth).reshape(1)
        q, k = rotate(q, pos), rotate(k, pos)
        keys = k if path is None else torch.cat([path[0], k], dim=2)
        values = v if path is None else torch.cat([path[1], v], dim=2)
        scores = (q @ keys.transpose(-1, -2)).float()  # [N, heads, 1, depth + 1]
        width = context[0].shape[-2] if context is not None else 0
        if width:
            # broadcast over rows: [N, heads, 1, C]
            ctx_scores = (q @ context[0].transpose(-1, -2)).float()
            if isinstance(start, torch.Tensor) or width > start:
                columns = torch.arange(width, device=x.device)
                later = columns >= torch.as_tensor(start, device=x.device)
                ctx_scores = ctx_scores.masked_fill(later, float("-inf"))
            scores = torch.cat([ctx_scores, scores], dim=-1)
        weights = (scores * q.shape[-1] ** -0.5).softmax(-1).to(v.dtype)
        attended = weights[..., width:] @ values
        if width:
            attended = attended + weights[..., :width] @ context[1]
        return self._finish(x[:, None], attended)[:, 0], (keys, values)

    def rollout(self, first: torch.Tensor, next_input, depth: int) -> list[torch.Tensor]:
        """Training over whole sequences: predictions at every position for depths 0..depth-1,
        [B, L, H] each.

        ``first`` [B, L, H] holds the true inputs (position i: f_i and t_{i+1}); ``next_input(j,
        predictions)`` gives depth j's inputs [B, L, H] (row i: the path from position i at position
        i + j) from depth j-1's predictions. Row i at depth j attends over the true inputs at
        positions 0..i and its own path at depths 1..j, which is what :meth:`step` sees when a draft
        starts at i (right padding is harmless: padded positions come after every real one).
        """
        b, length, _ = first.shape
        positions = torch.arange(length, device=first.device)
        q0, k0, v0 = self._split(first)
        k0, q0 = rotate(k0, positions), rotate(q0, positions)
        causal = torch.ones(length, length, dtype=torch.bool, device=first.device).tril()
        attended = F.scaled_dot_product_attention(q0, k0, v0, attn_mask=causal)
        predictions = [self._finish(first, attended)]
        diag_k: list[torch.Tensor] = []
        diag_v: list[torch.Tensor] = []
        scale = q0.shape[-1] ** -0.5
        for j in range(1, depth):
            x = next_input(j, predictions[-1])
            q, k, v = self._split(x)
            q, k = rotate(q, positions + j), rotate(k, positions + j)
            diag_k.append(k)
            diag_v.append(v)
            # [B, heads, L, L] over the context, [B, heads, L, j] over the own path
            ctx = (q @ k0.transpose(-1, -2)).float().masked_fill(~causal, float("-inf"))
            own = torch.stack([(q * dk).sum(-1) for dk in diag_k], dim=-1).float()
            weights = (torch.cat([ctx, own], dim=-1) * scale).softmax(-1).to(v.dtype)
            path = (weights[..., length:, None] * torch.stack(diag_v, dim=-2)).sum(-2)
            out = weights[..., :length] @ v0 + path
            predictions.append(self._finish(x, out))
        return predictions


@register
class ContextDrafter(AutoregressiveDrafter):
    """The autoregressive drafter with :class:`ContextDraftLayer`: its drafts read a context of keys
    and values per committed position (:meth:`context_entries`), kept by the decoder beside the base
    model's cache (:class:`~medusa.model.drafter_context.DrafterContext`, or the fast engine's
    buffer). Trained over whole sequences; ``drafter.depth`` ends in a 1."""

    name = "context"
    needs_context = True
    layer_class = ContextDraftLayer
    depth_flags = (1,)

    def context_entries(self, hidden: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values [heads, m, d] for positions ``positions`` [m]: the base model's
        hidden states there [m, H] (any device and dtype) and the tokens after them [m]. Both its
        caches, the eager loop's and the fast engine's buffer, are filled by this."""
        weight = self.drafter.fc.weight
        hidden = hidden.to(weight.device, weight.dtype)
        tokens = torch.as_tensor(tokens, device=weight.device, dtype=torch.long)
        return self.drafter.entries(hidden, self.embed(tokens, hidden), positions.to(weight.device))

    def new_context(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed keys and values [heads, capacity, head dim] with the layer's device and dtype
        (zeros: rows not yet written are masked, and a masked zero adds nothing)."""
        weight = self.drafter.fc.weight
        heads = self.drafter.num_attention_heads
        shape = (heads, capacity, weight.shape[0] // heads)
        return (torch.zeros(shape, device=weight.device, dtype=weight.dtype),
                torch.zeros(shape, device=weight.device, dtype=weight.dtype))
