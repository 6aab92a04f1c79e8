"""Plain Medusa heads: head k is L residual blocks and a vocabulary projection on the last hidden
state alone.

The one kind FasterDecoding's files hold (Medusa-1 ``medusa_lm_head.pt``, Medusa-2 ``medusa_head.*``
inside a model), and the one ``train-heads`` also exports in their layout.
"""

from __future__ import annotations

import torch

from medusa.drafters.base import Drafter, register


@register
class MedusaDrafter(Drafter):
    """K independent heads: every head's logits from one hidden state, no token read."""

    name = "medusa"
    joint_training = True
    medusa1_layout = True

    def head_logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None, num_heads: int
                    ) -> torch.Tensor:
        return torch.stack([self.heads[i](hidden) for i in range(num_heads)], dim=0)
