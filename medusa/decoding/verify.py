"""One forward pass of the base model over every draft node, with tree attention through public
inputs.

Each node attends to the committed prefix and to its own ancestors; its position id is prefix length
+ depth. This uses only the model's documented inputs (4D float mask, ``position_ids``, cache), no
patched modeling code.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import Tree, Verified


@lru_cache(maxsize=64)
def _tree_block(parents: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The [N, N] node-to-node part of the mask; static trees repeat it every step, so it is built
    once."""
    n = len(parents)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i, p in enumerate(parents):
        allowed[i, i] = True
        if p >= 0:
            allowed[i] |= allowed[p]
    block = torch.zeros(n, n, dtype=dtype)
    block.masked_fill_(~allowed, torch.finfo(dtype).min)
    return block.to(device)


def tree_attention_mask(
    tree: Tree, prefix_len: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """[1, 1, N, prefix+N] additive mask: 0 where a node may look (prefix, ancestors, itself),
    dtype-min elsewhere."""
    block = _tree_block(tuple(tree.parents), dtype, device)
    prefix = torch.zeros(len(tree), prefix_len, dtype=dtype, device=device)
    return torch.cat([prefix, block], dim=1)[None, None]


def verify(model: MedusaModel, cache, prefix_len: int, tree: Tree) -> Verified:
    """Score all draft nodes at once; afterwards the cache holds prefix + all N nodes (see
    cache.keep_path)."""
    device = model.device
    ids = torch.tensor([tree.tokens], device=device)
    positions = torch.tensor([[prefix_len + d for d in tree.depths]], device=device)
    mask = None if tree.is_chain else tree_attention_mask(tree, prefix_len, model.dtype, device)
    out = model.step(ids, cache, position_ids=positions, attention_mask=mask)
    return Verified(logits=out.logits[0], hidden=out.hidden[0], tokens=ids[0])
