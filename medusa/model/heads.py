"""The drafter a :class:`~medusa.model.medusa_lm.MedusaModel` composes, under the model's names.

``MedusaHeads(config, lm_head, embedding)`` builds the kind ``config.drafter`` names; the kinds
themselves, their stored layouts and the registry live in :mod:`medusa.drafters`.
"""

from __future__ import annotations

from medusa.drafters import (DRAFT_VOCAB, Drafter, HeadConfig, ResBlock, build_drafter,
                             infer_head_config)

MedusaHeads = build_drafter  # FasterDecoding's word for the heads a Medusa model carries

__all__ = ["DRAFT_VOCAB", "Drafter", "HeadConfig", "MedusaHeads", "ResBlock", "infer_head_config"]
