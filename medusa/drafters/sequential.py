"""Sequential (Hydra-style) heads: head k sees every token of its draft path.

Head k's input is ``h + Σ_{j≤k} V_j · embed(t_j)``, where t_0 is the next token and t_1..t_k the
draft tokens chosen at depths 1..k. A tree is then drafted depth by depth, one batched head call per
depth, and each node's children depend on the tokens above it. V_j (one per depth, shared by the
heads below it, stored as ``seq_proj.{j}.weight``) start at zero: fresh sequential heads are plain
Medusa heads.
"""

from __future__ import annotations

import torch

from medusa.drafters.base import HeadConfig, PathDrafter, register, zero_projections
from medusa.drafters.token_input import check_projections


@register
class SequentialDrafter(PathDrafter):
    """K heads on the running sum of the hidden state and the embedded path tokens."""

    name = "sequential"
    key_prefixes = ("seq_proj.",)

    def build(self, config: HeadConfig) -> None:
        self.seq_proj = zero_projections(config)

    def own_tensors(self) -> dict[str, torch.Tensor]:
        return {f"seq_proj.{k}": v for k, v in self.seq_proj.named_parameters()}

    def path_start(self, hidden: torch.Tensor, tokens: torch.Tensor, context=None
                   ) -> tuple[torch.Tensor, ...]:
        """``(h + V_0·embed(t_0),)``."""
        return (hidden + self.seq_proj[0](self.embed(tokens, hidden)),)

    def path_advance(self, state: tuple[torch.Tensor, ...], tokens: torch.Tensor, j: int,
                     context=None) -> tuple[torch.Tensor, ...]:
        """``(h + Σ_{i≤j} V_i·embed(t_i),)``."""
        return (state[0] + self.seq_proj[j](self.embed(tokens, state[0])),)

    @classmethod
    def infer_config(cls, state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                     ) -> HeadConfig:
        config = super().infer_config(state, hidden_size, vocab_size)
        check_projections(state, "seq_proj", config.num_heads)
        return config
