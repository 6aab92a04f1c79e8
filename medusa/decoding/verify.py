"""One forward pass of the base model over every draft node, with tree attention through public inputs.

Each node attends to the committed prefix and to its own ancestors; its position id is prefix length + depth.
This uses only the model's documented inputs (4D float mask, ``position_ids``, cache), no patched modeling code.
"""

from __future__ import annotations

import torch

from ..model import MedusaModel
from .base import Tree, Verified


def tree_attention_mask(tree: Tree, prefix_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, 1, N, prefix+N] additive mask: 0 where a node may look, the dtype's minimum elsewhere."""
    n = len(tree)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in tree.path_to(i):
            allowed[i, j] = True
    full = torch.ones(n, prefix_len + n, dtype=torch.bool)
    full[:, prefix_len:] = allowed
    mask = torch.zeros(n, prefix_len + n, dtype=dtype)
    mask.masked_fill_(~full, torch.finfo(dtype).min)
    return mask.to(device)[None, None]


def verify(model: MedusaModel, cache, prefix_len: int, tree: Tree, num_heads: int) -> Verified:
    """Score all draft nodes at once; afterwards the cache holds prefix + all N nodes (see cache.keep_path)."""
    device = model.device
    ids = torch.tensor([tree.tokens], device=device)
    positions = torch.tensor([[prefix_len + d for d in tree.depths]], device=device)
    mask = None if tree.is_chain else tree_attention_mask(tree, prefix_len, model.dtype, device)
    out = model.step(ids, cache, position_ids=positions, attention_mask=mask, num_heads=num_heads)
    heads = out.head_logits[:, 0] if out.head_logits is not None else None
    return Verified(logits=out.logits[0], head_logits=heads)
