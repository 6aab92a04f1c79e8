"""The drafter kinds, one module each, behind a name → class registry.

A kind is a :class:`~medusa.drafters.base.Drafter` subclass decorated with :func:`register`;
importing its module below registers it, in the order ``train-heads --drafter`` lists the names. The
loader builds drafters with :func:`build_drafter` from the kind and shape :func:`infer_head_config`
reads from stored tensors (each kind recognises its own keys), so no caller names a kind.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from medusa.drafters.base import (DRAFT_VOCAB, DRAFTERS, Drafter, HeadConfig, PathDrafter, ResBlock,
                                  register)
# the registry: one line per kind
from medusa.drafters.medusa import MedusaDrafter
from medusa.drafters.token_input import TokenInputDrafter
from medusa.drafters.sequential import SequentialDrafter
from medusa.drafters.autoregressive import AutoregressiveDrafter
from medusa.drafters.context import ContextDrafter

__all__ = ["DRAFT_VOCAB", "DRAFTERS", "AutoregressiveDrafter", "ContextDrafter", "Drafter",
           "HeadConfig", "MedusaDrafter", "PathDrafter", "ResBlock", "SequentialDrafter",
           "TokenInputDrafter", "build_drafter", "drafter_class", "drafter_names",
           "drafter_prefixes", "infer_head_config", "register", "stored_heads"]


def drafter_names() -> tuple[str, ...]:
    """The registered kinds' names, in registration order."""
    return tuple(DRAFTERS)


def drafter_class(name: str) -> type[Drafter]:
    """The kind registered as ``name``."""
    if name not in DRAFTERS:
        raise ValueError(f"unknown drafter {name!r}: use one of {', '.join(DRAFTERS)}")
    return DRAFTERS[name]


def build_drafter(config: HeadConfig, lm_head: nn.Module, embedding: nn.Module | None = None
                  ) -> Drafter:
    """A fresh drafter of ``config.drafter``'s kind on the base model's ``lm_head`` (and input
    ``embedding``, which kinds that read tokens need)."""
    return drafter_class(config.drafter)(config, lm_head, embedding)


def drafter_prefixes() -> tuple[str, ...]:
    """Every key prefix a registered kind stores beside the heads' ``{k}.{j}...`` tensors."""
    return tuple(dict.fromkeys(p for cls in DRAFTERS.values() for p in cls.key_prefixes))


def infer_head_config(state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                      ) -> HeadConfig:
    """The kind and shape of stored drafter tensors, checked against the base model's widths: the
    one kind that recognises them reads them. A ValueError says why none does."""
    tensors = {k: v for k, v in state.items() if k != DRAFT_VOCAB}
    if not tensors:
        raise ValueError("no head weights found")
    kinds = [cls for cls in DRAFTERS.values() if cls.recognises(tensors)]
    if len(kinds) > 1:
        names = ", ".join(cls.name for cls in kinds)
        raise ValueError(f"head weights fit several drafters ({names})")
    if kinds:
        return kinds[0].infer_config(tensors, hidden_size, vocab_size)
    prefixes = drafter_prefixes()
    for key in tensors:
        if not key.split(".", 1)[0].isdigit() and not key.startswith(prefixes):
            raise ValueError(f"unexpected head weight name {key!r}")
    found = " and ".join(f"{p}*" for p in prefixes if any(key.startswith(p) for key in tensors))
    raise ValueError(f"head weights with {found} tensors are not one drafter: no kind of "
                     f"{', '.join(DRAFTERS)} stores them so")


def stored_heads(keys: Iterable[str], declared: dict) -> int | None:
    """The head count of a drafter's stored tensors from their names alone (a file's header) and the
    metadata beside them; None where they cannot tell."""
    keys = list(keys)
    kinds = [cls for cls in DRAFTERS.values() if cls.matches_keys(keys)]
    if not kinds:  # no kind's layout: counted as heads; loading says what is wrong
        return Drafter.stored_heads(keys, declared)
    counts = {cls.stored_heads(keys, declared) for cls in kinds}
    return counts.pop() if len(counts) == 1 else None
