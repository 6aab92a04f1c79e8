"""The autoregressive drafter's one decoder layer (EAGLE-style): it predicts the base model's next hidden state from
the current one and the embedding of the token that follows it, so a draft path is extended one token at a time,
each prediction projected by the base ``lm_head``.

The layer attends causally over the draft path only (the base model's last hidden state is its first input), not
over the prompt: a path is at most a few tokens deep, and the hidden state already summarises the context. (The
context drafter, context_layer.py, is this layer attending over the whole context too.) Its
residual branches start at zero and its input projection passes the hidden state through, so a fresh drafter
predicts the same hidden state again at every depth: like fresh Medusa heads, it repeats the base model's next-token
distribution until trained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MAX_DEPTH = 16  # positions of the learned position embedding: deeper paths than any tree or beam search here


class DraftLayer(nn.Module):
    """RMSNorm → causal self-attention → RMSNorm → SwiGLU MLP, with residuals, over [batch, path, hidden]."""

    def __init__(self, hidden_size: int, num_attention_heads: int, learned_positions: bool = True) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_attention_heads} attention heads")
        self.num_attention_heads = num_attention_heads
        self.fc = nn.Linear(2 * hidden_size, hidden_size, bias=False)  # [hidden state; token embedding] → input
        self.position = nn.Embedding(MAX_DEPTH, hidden_size) if learned_positions else None  # (context: RoPE)
        self.attn_norm = nn.RMSNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.mlp_norm = nn.RMSNorm(hidden_size)
        self.gate = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.up = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.down = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        with torch.no_grad():  # start as the identity on the hidden state (see the module docstring)
            self.fc.weight.zero_()
            self.fc.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
            for zero in (self.out.weight, self.down.weight):
                zero.zero_()
            if self.position is not None:
                self.position.weight.zero_()

    def inputs(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([hidden, token_embedding], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] inputs → [B, L, H] predicted next hidden states (position j sees inputs 0..j)."""
        b, length, h = x.shape
        if length > MAX_DEPTH:
            raise ValueError(f"draft paths of {length} tokens are longer than the drafter's {MAX_DEPTH}")
        x = x + self.position.weight[:length]
        q, k, v = self.qkv(self.attn_norm(x)).view(b, length, 3, self.num_attention_heads, -1).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(b, length, h))
        return self._mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        n = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(n)) * self.up(n))

    def path_step(self, x: torch.Tensor, depth: int, path: tuple[torch.Tensor, torch.Tensor] | None, context=None
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One draft level, the interface both drafter layers share: inputs ``x`` [N, H] at ``depth`` of the path
        whose earlier levels' keys/values are ``path`` (None at depth 0). This layer reads no ``context``."""
        prediction, keys, values = self.extend(x, *(path or (None, None)))
        return prediction, (keys, values)

    def extend(self, x: torch.Tensor, keys: torch.Tensor | None, values: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One more position: ``x`` [B, H] is the input at position j (= the length of ``keys``), ``keys``/``values``
        [B, heads, j, head dim] the earlier positions' (None at j = 0). Returns the prediction at j (what
        :meth:`forward` gives there) and the keys/values through j, so a path grows by one layer pass per token."""
        b, h = x.shape
        j = 0 if keys is None else keys.shape[2]
        if j >= MAX_DEPTH:
            raise ValueError(f"draft paths of {j + 1} tokens are longer than the drafter's {MAX_DEPTH}")
        x = x + self.position.weight[j]
        q, k, v = self.qkv(self.attn_norm(x)).view(b, 3, self.num_attention_heads, -1).unbind(1)
        keys = k[:, :, None] if keys is None else torch.cat([keys, k[:, :, None]], dim=2)
        values = v[:, :, None] if values is None else torch.cat([values, v[:, :, None]], dim=2)
        attended = F.scaled_dot_product_attention(q[:, :, None], keys, values)  # the one query sees all j + 1
        return self._mlp(x + self.out(attended.reshape(b, h))), keys, values
