"""The context drafter's cache: its layer's keys and values at the committed positions of one
sequence.

A decode fills it from the base model's hidden states as tokens are committed (the prompt after the
prefill, the accepted path after each verify); a replay builds it for a whole known sequence at once
and shows each draft the positions below its start (:meth:`DrafterContext.view`). Drafts read it and
never write it, so a tree's many paths share one copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContextView:
    """Keys and values [heads, n, d] of positions 0..n-1; a draft from it starts at position n.
    ``start``, where given (an int or a 0-d device tensor), is that position instead, and the rows
    at or past it are ignored: the fast engine's static buffer, whose filled length lives on the
    device."""

    keys: torch.Tensor
    values: torch.Tensor
    start: int | torch.Tensor | None = None

    @property
    def position(self) -> int | torch.Tensor:
        return self.keys.shape[-2] if self.start is None else self.start


class DrafterContext:
    """Grows by :meth:`append` as a sequence is committed; ``heads`` is a drafter that
    :attr:`~medusa.drafters.Drafter.needs_context`. The rows live in buffers that double when
    full, so a decode copies its context O(log n) times, not once per step."""

    def __init__(self, heads, capacity: int = 256) -> None:
        if not heads.needs_context:
            raise ValueError(f"{heads.name} heads keep no context")
        self.heads = heads
        self._keys, self._values = heads.new_context(capacity)
        self.length = 0

    def append(self, hidden: torch.Tensor, tokens: torch.Tensor | list[int], start: int) -> None:
        """Positions start..start+m-1: the base model's hidden states there [m, H] and the tokens
        after them [m]."""
        if start != self.length:
            raise ValueError(
                f"the drafter context holds {self.length} positions; cannot append at {start}"
            )
        m = len(tokens)
        if not m:
            return
        k, v = self.heads.context_entries(hidden[:m], tokens, torch.arange(start, start + m))
        end = start + m
        # double (at least): earlier rows are copied once per doubling
        if end > self._keys.shape[1]:
            grown = max(end, 2 * self._keys.shape[1])
            self._keys = torch.cat([self._keys[:, :start], self._keys.new_empty(
                (self._keys.shape[0], grown - start, self._keys.shape[2]))], dim=1)
            self._values = torch.cat([self._values[:, :start], self._values.new_empty(
                (self._values.shape[0], grown - start, self._values.shape[2]))], dim=1)
        self._keys[:, start:end] = k
        self._values[:, start:end] = v
        self.length = end

    def view(self, length: int | None = None) -> ContextView:
        """The first ``length`` positions (all by default): what a draft starting at ``length``
        attends over."""
        n = self.length if length is None else length
        if not 0 <= n <= self.length:
            raise ValueError(f"the drafter context holds {self.length} positions, not {n}")
        return ContextView(self._keys[:, :n], self._values[:, :n])

    @classmethod
    def of_sequence(cls, heads, hidden: torch.Tensor, ids: list[int]) -> "DrafterContext":
        """The context of a known sequence: hidden states [L, H] after each of its L tokens ``ids``.
        """
        context = cls(heads)
        if len(ids) > 1:
            context.append(hidden[:len(ids) - 1], ids[1:], 0)
        return context
