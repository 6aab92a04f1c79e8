"""Prompt building and reference cleaning, following the seed protocol (a course script).

The seed protocol is reproduced exactly for Hindi->English so results stay comparable
with it; other language pairs reuse the same sentence with the language names swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medusa.console import say
from medusa.errors import MedusaError
from medusa.evaluation.languages import SOURCE_LANG, TARGET_LANG, language_name

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


def seed_prompt(source: str, src_lang: str = SOURCE_LANG, tgt_lang: str = TARGET_LANG) -> str:
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
    return fit_prompt(tokenizer, source, src_lang, tgt_lang, style, max_input_len)[0]


def encode_prompts(tokenizer: Any, sources: Sequence[str], src_lang: str, tgt_lang: str, style: str,
                   max_input_len: int) -> list[list[int]]:
    """:func:`encode_prompt` for every source, saying once (with a count) how many had to be cut to
    fit."""
    fitted = [
        fit_prompt(tokenizer, text, src_lang, tgt_lang, style, max_input_len) for text in sources
    ]
    cut = sum(was_cut for _, was_cut in fitted)
    if cut:
        how = ("their source text was cut to fit, the chat template kept" if style == "chat" else
               "they were cut from the right as the seed protocol does, losing the prompt's end")
        say(
            f"note: {cut} of {len(sources)} prompts were longer than --max-input-len"
            f" {max_input_len}: {how}; raise --max-input-len to keep them whole"
        )
    return [ids for ids, _ in fitted]


def fit_prompt(tokenizer: Any, source: str, src_lang: str, tgt_lang: str, style: str,
               max_input_len: int) -> tuple[list[int], bool]:
    """The prompt's ids and whether `source` had to be cut for the prompt to fit in `max_input_len`
    tokens.

    "chat" cuts the source, never the template: cutting the encoded prompt from the right would drop
    the assistant turn, and the model would continue the user's text instead of answering. "seed"
    keeps the seed script's own right-side cut, for comparability with it.
    """
    if isinstance(max_input_len, bool) or not isinstance(max_input_len, int) or max_input_len < 1:
        raise MedusaError(f"--max-input-len must be a positive integer (got {max_input_len!r})")
    if style == "seed":
        text = seed_prompt(source, src_lang, tgt_lang)
        encoded = tokenizer(text, truncation=True, max_length=max_input_len)
        ids = [int(i) for i in encoded["input_ids"]]
        return ids, len(ids) == max_input_len and len(tokenizer(text)["input_ids"]) > max_input_len
    if style == "chat":
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise MedusaError(f"tokenizer {name} has no chat template; use --prompt-style seed")
        ids = _chat_ids(tokenizer, source, src_lang, tgt_lang)
        if len(ids) <= max_input_len:
            return ids, False
        return _cut_chat_source(tokenizer, source, src_lang, tgt_lang, max_input_len), True
    raise MedusaError(f"unknown prompt style {style!r}; use one of: {', '.join(PROMPT_STYLES)}")


def _chat_ids(tokenizer: Any, source: str, src_lang: str, tgt_lang: str) -> list[int]:
    message = {"role": "user", "content": f"{instruction(src_lang, tgt_lang)}:\n\n{source}"}
    return _ids(tokenizer.apply_chat_template([message], tokenize=True, add_generation_prompt=True))


def _cut_chat_source(
    tokenizer: Any, source: str, src_lang: str, tgt_lang: str, max_input_len: int
) -> list[int]:
    """The chat prompt of the longest start of `source` that fits (re-encoding can merge tokens at
    the cut, so the fit is checked on the whole prompt)."""
    overhead = len(_chat_ids(tokenizer, "", src_lang, tgt_lang))
    if overhead >= max_input_len:
        raise MedusaError(
            f"--max-input-len {max_input_len} leaves no room for the source: the chat template and "
            f"instruction alone take {overhead} tokens; raise it"
        )
    source_ids = tokenizer.encode(source, add_special_tokens=False)
    keep = min(len(source_ids), max_input_len - overhead)
    while keep > 0:
        # a byte-level cut can split a character: drop the replacement mark it leaves
        text = tokenizer.decode(source_ids[:keep], skip_special_tokens=True).rstrip("\ufffd")
        ids = _chat_ids(tokenizer, text, src_lang, tgt_lang)
        if len(ids) <= max_input_len:
            return ids
        keep -= len(ids) - max_input_len
    return _chat_ids(tokenizer, "", src_lang, tgt_lang)


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
    if (
        isinstance(max_output_len, bool)
        or not isinstance(max_output_len, int)
        or max_output_len < 1
    ):
        raise MedusaError(f"--max-output-len must be a positive integer (got {max_output_len!r})")
    ids = tokenizer.encode(target, add_special_tokens=False)[:max_output_len]
    return clean_reference(tokenizer.decode(ids, skip_special_tokens=True))
