"""FasterDecoding's import path ``medusa.model.medusa_model_new``: course submissions import
``MedusaModel`` from here.

Only an alias: the class is :class:`medusa.model.medusa_lm.MedusaModel`, which answers the
original's calls.
"""

from medusa.model.medusa_lm import MedusaModel

__all__ = ["MedusaModel"]
