"""KV-cache bookkeeping: after verification keep only the accepted path's entries, moved into place.
"""

from __future__ import annotations

import torch


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def keep_path(cache, prefix_len: int, path: list[int]) -> None:
    """Drop rejected draft nodes: entries ``prefix_len + path`` move to ``prefix_len ..`` and the
    rest is cut."""
    if path != list(range(len(path))):  # a chain prefix is already in place
        src = torch.tensor([prefix_len + i for i in path])
        for layer in cache.layers:
            for tensor in (layer.keys, layer.values):
                index = src.to(tensor.device)
                tensor[:, :, prefix_len : prefix_len + len(path)] = tensor.index_select(2, index)
    extra = cache.get_seq_length() - (prefix_len + len(path))
    if extra > 0:  # a negative argument means "remove this many" in every transformers 5 release
        cache.crop(-extra)
