"""Token-input heads: each head first adds ``U_k · embed(next token)`` to the hidden state.

The next token is the base model's own argmax at that position. It is known before drafting (it is
the tree's root, and under greedy acceptance it is always accepted), so the heads need not guess it:
head k then predicts token k+1 after a *known* token, as EAGLE/Hydra heads do, but without their
per-depth sequential calls. U_k starts at zero, so fresh heads still reproduce the base model.
FasterDecoding's format cannot hold U_k; the project format stores it as ``token_proj.{k}.weight``.
"""

from __future__ import annotations

import torch

from medusa.drafters.base import Drafter, HeadConfig, register, zero_projections


@register
class TokenInputDrafter(Drafter):
    """K independent heads that also read the embedding of the base model's next token."""

    name = "token-input"
    reads_next_token = True
    joint_training = True
    key_prefixes = ("token_proj.",)

    def build(self, config: HeadConfig) -> None:
        self.token_proj = zero_projections(config)

    def own_tensors(self) -> dict[str, torch.Tensor]:
        return {f"token_proj.{k}": v for k, v in self.token_proj.named_parameters()}

    def head_logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None, num_heads: int
                    ) -> torch.Tensor:
        emb = self.embed(next_tokens, hidden)
        return torch.stack([self.heads[i](hidden + self.token_proj[i](emb))
                            for i in range(num_heads)], dim=0)

    def one_head(self, hidden: torch.Tensor, next_tokens: torch.Tensor, k: int) -> torch.Tensor:
        return self.heads[k](hidden + self.token_proj[k](self.embed(next_tokens, hidden)))

    @classmethod
    def infer_config(cls, state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                     ) -> HeadConfig:
        config = super().infer_config(state, hidden_size, vocab_size)
        check_projections(state, "token_proj", config.num_heads)
        return config


def check_projections(state: dict[str, torch.Tensor], prefix: str, num_heads: int) -> None:
    """Every head has its ``{prefix}.{k}.weight`` (a file with some of them is damaged or of another
    layout)."""
    if any(f"{prefix}.{k}.weight" not in state for k in range(num_heads)):
        raise ValueError(f"some heads have a {prefix} projection and some do not")

