"""A preallocated KV cache for the fast engine: one buffer for every layer, written at device-side
slots.

The model sees an ordinary transformers :class:`~transformers.Cache` (its public ``update``
contract: store the new keys/values, return the whole layer), so no modeling code is patched. Unlike
``DynamicCache`` nothing is ever concatenated, cropped or reallocated: a forward writes its tokens
at ``write_slots`` (a device tensor the engine sets), attention reads all ``capacity`` slots under a
4D mask, and after acceptance :meth:`StaticKVCache.compact` moves the accepted path's rows into
place with one gather and one scatter over all layers. Every address stays fixed, which is what lets
a CUDA graph replay the step.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

# the slot dimension of the buffer [layers, 2 (keys, values), batch, kv heads, capacity, head dim]
KV_DIM = 4


class _StaticLayer(CacheLayerMixin):
    """One layer's view of the shared buffer; writes go to the owner's ``write_slots``."""

    is_compileable = True
    is_sliding = False

    def __init__(self, owner: "StaticKVCache", index: int) -> None:
        super().__init__()
        self.owner = owner
        self.keys = owner.kv[index, 0]
        self.values = owner.kv[index, 1]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to do: the buffer exists before the first forward."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        slots = self.owner.write_slots
        if slots.dim() == 1:  # one sequence, or every row at the same slots
            self.keys.index_copy_(2, slots, key_states.to(self.keys.dtype))
            self.values.index_copy_(2, slots, value_states.to(self.values.dtype))
        else:  # [batch, tokens]: each row at its own slots
            index = slots[:, None, :, None].expand(-1, key_states.shape[1], -1,
                                                   key_states.shape[-1])
            self.keys.scatter_(2, index, key_states.to(self.keys.dtype))
            self.values.scatter_(2, index, value_states.to(self.values.dtype))
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.owner.capacity, 0

    def get_seq_length(self) -> int:
        return self.owner.length_hint

    def get_max_length(self) -> int:
        return self.owner.capacity

    def get_max_cache_shape(self) -> int:
        return self.owner.capacity


class StaticKVCache(Cache):
    """KV storage for ``capacity`` positions of ``batch`` sequences (one by default); with several,
    ``write_slots`` is [batch, tokens] (each row's own slots) and :meth:`compact_rows` keeps each
    row's accepted path.

    ``length_hint`` is the host's idea of the committed length, for callers that ask the cache; the
    fast engine keeps the true committed length in a device tensor and passes positions and masks
    explicitly.
    """

    def __init__(self, config, capacity: int, device: torch.device, dtype: torch.dtype,
                 batch: int = 1) -> None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        self.capacity, self.batch = capacity, batch
        self.length_hint = 0
        self.kv = torch.zeros(
            text.num_hidden_layers, 2, batch, kv_heads, capacity, head_dim, device=device,
            dtype=dtype,
        )
        self.write_slots = torch.zeros(0, dtype=torch.long, device=device)
        super().__init__(layers=[_StaticLayer(self, i) for i in range(text.num_hidden_layers)])

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def compact(self, committed: torch.Tensor, path: torch.Tensor) -> None:
        """Move rows ``committed + path[j]`` to ``committed + j`` in every layer (keys and values at
        once).

        ``path`` may be padded past the accepted length: those rows land beyond the committed
        length, where the mask hides them and the next forward overwrites them.
        """
        dst = committed + torch.arange(path.numel(), device=path.device)
        moved = self.kv.index_select(KV_DIM, committed + path)
        self.kv.index_copy_(KV_DIM, dst, moved)

    def compact_rows(self, committed: torch.Tensor, paths: torch.Tensor) -> None:
        """:meth:`compact` per row: row b's slots ``committed[b] + paths[b, j]`` move to
        ``committed[b] + j`` (``committed`` [batch], ``paths`` [batch, width]), in one gather and
        one scatter over all layers."""
        width = paths.shape[1]
        src = committed[:, None] + paths
        dst = committed[:, None] + torch.arange(width, device=paths.device)
        layers, _, batch, kv_heads, _, head_dim = self.kv.shape
        shape = (layers, 2, batch, kv_heads, width, head_dim)
        moved = self.kv.gather(KV_DIM, src[None, None, :, None, :, None].expand(shape))
        self.kv.scatter_(KV_DIM, dst[None, None, :, None, :, None].expand(shape), moved)

    def copy_row(self, row: int, other: "StaticKVCache", length: int) -> None:
        """Row ``row``'s first ``length`` slots from ``other`` (a one-row cache of the same
        capacity): how a prompt prefilled on its own joins a batch."""
        self.kv[:, :, row, :, :length].copy_(other.kv[:, :, 0, :, :length])
