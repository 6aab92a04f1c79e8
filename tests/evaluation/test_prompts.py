"""Tests for medusa.evaluation.prompts and medusa.evaluation.languages, with a tiny in-memory
tokenizer (no downloads)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from medusa.errors import MedusaError
from medusa.evaluation.languages import LANGUAGES, check_language_code, language_name
from medusa.evaluation.prompts import (
    SEED_PREFIX,
    clean_reference,
    encode_prompt,
    instruction,
    process_reference,
    seed_prompt,
)

HINDI = "बिल्ली चटाई पर बैठी"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]


def _vocab() -> dict[str, int]:
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    texts = [seed_prompt(HINDI), instruction("hin_Deva", "eng_Latn"), "the cat sat on the mat ."]
    for word in " ".join(texts).split():
        vocab.setdefault(word, len(vocab))
    return vocab


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """Whole-word tokenizer that adds <s> like many causal LMs, so ids are predictable."""
    vocab = _vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = [("<s>", vocab["<s>"])]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=bos)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture()
def plain_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The same tokenizer without a chat template."""
    clone = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>")
    clone.chat_template = None
    return clone


# ---------------------------------------------------------------- languages


def test_language_table():
    assert len(LANGUAGES) == 23
    assert language_name("hin_Deva") == "Hindi" and language_name("eng_Latn") == "English"
    assert language_name("san_Deva") == "Sanskrit" and language_name("mni_Mtei") == "Manipuri"
    assert check_language_code("sat_Olck") == "sat_Olck"
    with pytest.raises(MedusaError, match="unknown language code 'xx'; use one of: asm_Beng"):
        check_language_code("xx")
    with pytest.raises(MedusaError, match="unknown language code"):
        language_name("fra_Latn")


# ---------------------------------------------------------------- prompt text


def test_seed_prompt_exact():
    expected = (
        "You are an AI assistant whose purpose is to perform translation. Given the following "
        f"sentence in Hindi, translate it to English:\n\n{HINDI}\n\ncompletion:"
    )
    assert seed_prompt(HINDI) == expected
    assert seed_prompt(HINDI, "hin_Deva", "eng_Latn") == expected
    assert instruction("hin_Deva", "eng_Latn") == SEED_PREFIX


def test_instruction_other_pair():
    assert instruction("eng_Latn", "tam_Taml") == (
        "You are an AI assistant whose purpose is to perform translation. "
        "Given the following sentence in English, translate it to Tamil"
    )
    assert seed_prompt("x", "san_Deva", "hin_Deva").startswith(
        "You are an AI assistant whose purpose is to perform translation. "
        "Given the following sentence in Sanskrit, translate it to Hindi:\n\nx\n\n"
    )
    with pytest.raises(MedusaError):
        instruction("hin_Deva", "xx")


# ---------------------------------------------------------------- references


def test_clean_reference():
    assert clean_reference("Hello, World - it's: OK?") == "hello world  its ok"
    assert clean_reference("A.B;C!\"D\"") == "ab;c!\"d\""  # only . , - ? ' : are removed
    assert clean_reference("ÉTÉ 'Dr.' hin") == "été dr hin"


def test_process_reference_truncates_and_cleans(tokenizer):
    assert process_reference(tokenizer, "the cat sat on the mat .", 3) == "the cat sat"
    assert (
        process_reference(tokenizer, "the cat sat on the mat .", 100) == "the cat sat on the mat "
    )
    with pytest.raises(MedusaError, match="max-output-len"):
        process_reference(tokenizer, "the cat", 0)


# ---------------------------------------------------------------- encoding


def test_encode_seed_uses_default_special_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    expected = [vocab["<s>"]] + [vocab[w] for w in seed_prompt(HINDI).split()]
    assert encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "seed", 512) == expected
    assert encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "seed", 5) == expected[:5]


def test_encode_chat_contains_instruction_and_ends_with_generation_prompt(tokenizer):
    vocab = tokenizer.get_vocab()
    ids = encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", 512)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert ids[0] == vocab["<|user|>"] and ids[-1] == vocab["<|assistant|>"]
    words = [vocab[w] for w in f"{SEED_PREFIX}:\n\n{HINDI}".split()]
    assert ids[1:-1] == words
    # too short for the template itself: an error, never a prompt cut before the assistant turn
    with pytest.raises(MedusaError, match="leaves no room for the source"):
        encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", 4)


def test_encode_chat_handles_plain_list_return(tokenizer, monkeypatch):
    ids = encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", 512)
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: list(ids))
    assert encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", len(ids)) == ids
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: [list(ids)])
    assert encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", 512) == ids


def test_chat_without_template(plain_tokenizer):
    with pytest.raises(MedusaError, match="has no chat template; use --prompt-style seed"):
        encode_prompt(plain_tokenizer, HINDI, "hin_Deva", "eng_Latn", "chat", 512)


def test_bad_style_and_length(tokenizer):
    with pytest.raises(MedusaError, match="unknown prompt style 'fancy'"):
        encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "fancy", 512)
    with pytest.raises(MedusaError, match="max-input-len"):
        encode_prompt(tokenizer, HINDI, "hin_Deva", "eng_Latn", "seed", 0)
