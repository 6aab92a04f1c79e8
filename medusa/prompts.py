"""Prompt building and reference cleaning, following the seed protocol (a course script).

The seed protocol is reproduced exactly for Hindi->English so results stay comparable
with it; other language pairs reuse the same sentence with the language names swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medusa.errors import MedusaError
from medusa.languages import language_name

SEED_PREFIX = (
    "You are an AI assistant whose purpose is to perform translation. "
    "Given the following sentence in Hindi, translate it to English"
)
PROMPT_STYLES = ("seed", "chat")

# The seed script strips exactly these characters from references (and lowercases).
_REFERENCE_STRIP = str.maketrans("", "", ".,-?':")


def instruction(src_lang: str, tgt_lang: str) -> str:
    """The seed instruction for a language pair (exactly SEED_PREFIX for hin_Deva->eng_Latn)."""
    return (
        "You are an AI assistant whose purpose is to perform translation. "
        f"Given the following sentence in {language_name(src_lang)}, "
        f"translate it to {language_name(tgt_lang)}"
    )


def seed_prompt(source: str, src_lang: str = "hin_Deva", tgt_lang: str = "eng_Latn") -> str:
    """The plain-text completion prompt of the seed script."""
    return f"{instruction(src_lang, tgt_lang)}:\n\n{source}\n\ncompletion:"


def encode_prompt(
    tokenizer: Any,
    source: str,
    src_lang: str,
    tgt_lang: str,
    style: str,
    max_input_len: int,
) -> list[int]:
    """Token ids of the prompt for `source`, at most `max_input_len` long.

    "seed" tokenizes the seed prompt with the tokenizer's default special tokens, as the
    seed script does; "chat" wraps the instruction and source in the chat template, for
    instruction-tuned models that expect it.
    """
    if isinstance(max_input_len, bool) or not isinstance(max_input_len, int) or max_input_len < 1:
        raise MedusaError(f"--max-input-len must be a positive integer (got {max_input_len!r})")
    if style == "seed":
        encoded = tokenizer(
            seed_prompt(source, src_lang, tgt_lang), truncation=True, max_length=max_input_len
        )
        return [int(i) for i in encoded["input_ids"]]
    if style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise MedusaError(f"tokenizer {name} has no chat template; use --prompt-style seed")
        message = {"role": "user", "content": f"{instruction(src_lang, tgt_lang)}:\n\n{source}"}
        out = tokenizer.apply_chat_template([message], tokenize=True, add_generation_prompt=True)
        return _ids(out)[:max_input_len]
    raise MedusaError(f"unknown prompt style {style!r}; use one of: {', '.join(PROMPT_STYLES)}")


def _ids(out: Any) -> list[int]:
    """Flat token ids from apply_chat_template, which returns a list or a dict-like encoding."""
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):  # a tensor or array
        out = out.tolist()
    if isinstance(out, Sequence) and out and isinstance(out[0], Sequence):
        out = out[0]  # a batch of one conversation
    return [int(i) for i in out]


def clean_reference(text: str) -> str:
    """Lowercase and drop `. , - ? ' :`, as the seed script normalises text before scoring."""
    return text.lower().translate(_REFERENCE_STRIP)


def process_reference(tokenizer: Any, target: str, max_output_len: int) -> str:
    """The reference cut to `max_output_len` tokens and cleaned, as the seed script scores it.

    Truncating references to the generation budget keeps scores about the same span the
    model was allowed to produce.
    """
    if isinstance(max_output_len, bool) or not isinstance(max_output_len, int) or max_output_len < 1:
        raise MedusaError(f"--max-output-len must be a positive integer (got {max_output_len!r})")
    ids = tokenizer.encode(target, add_special_tokens=False)[:max_output_len]
    return clean_reference(tokenizer.decode(ids, skip_special_tokens=True))
