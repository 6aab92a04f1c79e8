"""The model the decoders run: a causal LM plus optional Medusa heads (:mod:`.medusa_lm`), the ids
that end a reply (:mod:`.stops`), and FasterDecoding's import paths (:mod:`.medusa_model`,
:mod:`.medusa_model_new`) so that code written against the original library imports unchanged."""

from medusa.model.medusa_lm import MedusaModel, ModelInfo, StepOutput
from medusa.model.stops import END_OF_TURN_TOKENS, stop_token_ids

__all__ = ["END_OF_TURN_TOKENS", "MedusaModel", "ModelInfo", "StepOutput", "stop_token_ids"]
