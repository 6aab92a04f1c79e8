"""medusa: Medusa multi-head parallel decoding for causal language models."""

__version__ = "0.1.0"
