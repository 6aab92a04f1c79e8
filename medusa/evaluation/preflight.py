"""A run's settings checked against the checkpoint's small files before any weight is loaded.

A bad ``--generator`` (imported in its own process), ``--prompt-style``, ``-nmh`` or ``--tree-size``
then fails in one line at once, instead of after minutes of loading; and a model without a chat
template gets the seed prompt instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from medusa.model.checkpoint_facts import CheckpointFacts, inspect_checkpoint
from medusa.errors import MedusaError

S = TypeVar("S")


@dataclass
class Preflight:
    # the run's RunSettings (medusa/settings.py), the prompt style resolved where the files tell it
    settings: object
    facts: CheckpointFacts
    generator: object | None  # the submission's process (``--generator``), its file imported there


def resolve_prompt_style(style: str, chat_template: bool | None, base: str) -> str:
    """``auto``: chat where the tokenizer has a chat template, else the seed prompt; ``chat``
    without one is an error. An unknown template (``None``) leaves ``auto`` to be resolved once the
    tokenizer is loaded."""
    if style == "auto" and chat_template is not None:
        return "chat" if chat_template else "seed"
    if style == "chat" and chat_template is False:
        raise MedusaError(f"the tokenizer of {base} has no chat template: use --prompt-style seed "
                          "(or leave --prompt-style out, which picks it for such models)")
    return style


def prompt_note(style: str, chosen: bool, base: str) -> str:
    """The one line that says which prompt the run uses, and why when it was picked automatically.
    """
    if style == "chat":
        return "prompt: chat (the tokenizer's chat template around the seed instruction)"
    why = f"; {base} has no chat template" if chosen else ""
    return f"prompt: seed (the course's plain-text prompt{why})"


def settle_prompt_style(settings: S, tokenizer, base: str) -> S:
    """The last word, from the loaded tokenizer (GGUF files keep their template inside the weights
    file); any settings dataclass with a ``prompt_style`` (the run's, calibrate-tree's,
    measure-acceptance's)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    return replace(settings, prompt_style=resolve_prompt_style(settings.prompt_style, has, base))


def check_head_count(num_heads: int, name: str, settings, strategy) -> None:
    """The strategy and ``-nmh`` (``settings``: the run's) against the heads the model has (known
    from the files or the loaded model)."""
    k, s = num_heads, settings.use_no_medusa_heads
    if k and s > k:
        raise MedusaError(
            f"--use-no-medusa-heads {s} asks for more heads than the checkpoint has ({k}); use"
            f" 1..{k}"
        )
    if strategy.num_heads and not k:
        raise MedusaError(
            f"--decoding-strategy {settings.decoding_strategy} needs Medusa heads and {name} has"
            " none; pass --medusa-heads PATH or a Medusa checkpoint"
        )
    if strategy.num_heads > k:
        raise MedusaError(
            f"the tree is {strategy.num_heads} levels deep but the model has {k} heads; "
            "use a shallower --tree"
        )


def check_table_heads(num_heads: int, needed: int, name: str) -> None:
    if num_heads < needed:
        raise MedusaError(
            f"--assignment-table needs {needed} Medusa heads; {name} has "
            f"{num_heads} (more heads than the checkpoint has); pass a model with {needed} heads"
        )


def inspect_run(settings: S, start_generator: Callable[[S, CheckpointFacts], object]) -> Preflight:
    """Read the checkpoint's configs and headers, start the submission's process (which imports it),
    and resolve the prompt style. ``settings`` are the run's; ``start_generator(settings, facts)``
    starts the ``--generator`` process (the runner passes
    :func:`medusa.grading.launch.start_submission`), called only when one is given."""
    facts = inspect_checkpoint(
        settings.model_name,
        settings.medusa_heads,
        settings.adapter,
        settings.bare_embedded,
        settings.hf_token,
    )
    generator = start_generator(settings, facts) if settings.generator else None
    style = resolve_prompt_style(settings.prompt_style, facts.chat_template, facts.base)
    return Preflight(replace(settings, prompt_style=style), facts, generator)
