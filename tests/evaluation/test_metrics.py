"""Metrics checked against values worked out by hand (arithmetic in comments)."""

from __future__ import annotations

import math
import unicodedata

import pytest
from rouge_score import rouge_scorer

from medusa.errors import MedusaError
from medusa.evaluation.metrics import (
    SpeedStats,
    UnicodeWordTokenizer,
    bleu1,
    compute_all,
    rouge,
    sacrebleu_scores,
)

# ---------------------------------------------------------------- bleu1


def test_bleu1_corpus_with_short_predictions_applies_brevity_penalty():
    preds = ["the cat sat", "a dog ran"]
    refs = ["the cat sat on the mat", "a dog barked"]
    # ex1: 3 matches, c=3, r=6; ex2: 2 matches (a, dog), c=3, r=3
    # precision = 5/6; ratio = 6/9 = 2/3 <= 1 -> bp = exp(1 - 3/2) = exp(-0.5)
    expected = (5 / 6) * math.exp(-0.5)
    assert bleu1(preds, refs) == pytest.approx(expected, abs=1e-9)


def test_bleu1_long_prediction_has_no_brevity_penalty():
    # c=4, r=2 -> ratio 2 > 1 -> bp = 1; matches the, ball = 2 -> 2/4
    assert bleu1(["the big red ball"], ["the ball"]) == pytest.approx(0.5, abs=1e-9)


def test_bleu1_clips_repeated_words():
    # "the" occurs 4x in prediction, 1x in reference -> clipped to 1.
    # precision = 1/4; c=4 > r=2 -> bp = 1. (Unclipped would give 1.0.)
    assert bleu1(["the the the the"], ["the cat"]) == pytest.approx(0.25, abs=1e-9)


def test_bleu1_13a_splits_off_punctuation():
    # 13a: "Hello, world." -> Hello , world .  (c=4); reference Hello world (r=2)
    # matches Hello, world = 2 -> precision 2/4, bp = 1 -> 0.5.
    # Whitespace splitting would give "Hello," "world." and 0 matches.
    assert bleu1(["Hello, world."], ["Hello world"]) == pytest.approx(0.5, abs=1e-9)


def test_bleu1_is_case_sensitive():
    # "The" != "the": 1 match of 2 tokens, c = r = 2 -> bp = exp(0) = 1 -> 0.5
    assert bleu1(["The cat"], ["the cat"]) == pytest.approx(0.5, abs=1e-9)


def test_bleu1_empty_prediction_and_empty_corpus_are_zero():
    assert bleu1([""], ["a reference"]) == 0.0
    assert bleu1([], []) == 0.0


def test_bleu1_length_mismatch_raises():
    with pytest.raises(MedusaError):
        bleu1(["a"], ["a", "b"])


# ---------------------------------------------------------------- rouge


def test_rouge_english_mean_of_f_measures():
    preds = ["the cat on the mat", "four three two one"]
    refs = ["the cat sat on the mat", "one two three four"]
    # ex1: ref 6 tokens, pred 5 tokens.
    #   rouge1 overlap the:2 cat on mat = 5 -> P=1, R=5/6, F=2*(5/6)/(11/6)=10/11
    #   rouge2 ref bigrams 5, pred 4, shared the-cat on-the the-mat = 3
    #          P=3/4, R=3/5, F=2*0.45/1.35 = 2/3
    #   rougeL LCS = 5 (pred is a subsequence) -> F = 10/11
    # ex2: reversed words. rouge1 F = 1; no shared bigram -> rouge2 0;
    #   LCS = 1 -> P = R = 1/4 -> F = 1/4
    scores = rouge(preds, refs, "eng_Latn")
    assert scores["rouge1"] == pytest.approx((10 / 11 + 1) / 2, abs=1e-9)
    assert scores["rouge2"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-9)
    assert scores["rougeL"] == pytest.approx((10 / 11 + 1 / 4) / 2, abs=1e-9)


HINDI_REF = "मैं घर जा रहा हूँ"
HINDI_PRED = "मैं बाजार जा रहा हूँ"


def test_unicode_tokenizer_keeps_devanagari_matras_and_virama():
    assert UnicodeWordTokenizer().tokenize(HINDI_REF) == ["मैं", "घर", "जा", "रहा", "हूँ"]
    # virama (U+094D) inside स्कूल; danda । (punctuation) separates
    tokens = UnicodeWordTokenizer().tokenize("मैं स्कूल गया।")
    assert tokens == ["मैं", "स्कूल", "गया"]
    assert "\u094d" in tokens[1]


def test_unicode_tokenizer_lowercases_and_splits_on_punctuation():
    assert UnicodeWordTokenizer().tokenize("Hello, WORLD 42!") == ["hello", "world", "42"]


def test_rouge_hindi_hand_computed():
    # 5 tokens each, shared unigrams मैं जा रहा हूँ = 4 -> P = R = F = 4/5
    # bigrams: shared जा-रहा, रहा-हूँ = 2 of 4 each -> F = 1/2
    # LCS मैं जा रहा हूँ = 4 -> F = 4/5
    scores = rouge([HINDI_PRED], [HINDI_REF], "hin_Deva")
    assert scores["rouge1"] == pytest.approx(4 / 5, abs=1e-9)
    assert scores["rouge2"] == pytest.approx(1 / 2, abs=1e-9)
    assert scores["rougeL"] == pytest.approx(4 / 5, abs=1e-9)


def test_default_rouge_tokenizer_scores_hindi_zero():
    """Why the Unicode tokenizer exists: the default one drops all Devanagari."""
    default = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    assert default.score(HINDI_REF, HINDI_PRED)["rouge1"].fmeasure == 0.0
    # a Latin target code selects that default tokenizer
    assert rouge([HINDI_PRED], [HINDI_REF], "eng_Latn")["rouge1"] == 0.0


@pytest.mark.parametrize(
    "text, words",
    [
        ("நான் வீட்டுக்குப் போகிறேன்", ["நான்", "வீட்டுக்குப்", "போகிறேன்"]),  # Tamil
        ("আমি বাড়ি যাচ্ছি।", ["আমি", "বাড়ি", "যাচ্ছি"]),  # Bengali
        ("میں گھر جا رہا ہوں۔", ["میں", "گھر", "جا", "رہا", "ہوں"]),  # Urdu
    ],
)
def test_unicode_tokenizer_other_indic_scripts(text, words):
    tokens = UnicodeWordTokenizer().tokenize(text)
    assert tokens == words


def test_unicode_tokenizer_keeps_tamil_and_bengali_vowel_signs():
    for text in ("நான் வீட்டுக்குப் போகிறேன்", "আমি বাড়ি যাচ্ছি"):
        tokens = UnicodeWordTokenizer().tokenize(text)
        assert len(tokens) == 3
        # every word here carries a combining mark (vowel sign, virama/pulli or nukta)
        assert all(any(unicodedata.category(ch).startswith("M") for ch in t) for t in tokens)


def test_rouge_empty_inputs_are_zero():
    zeros = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge([], [], "hin_Deva") == zeros
    assert rouge([""], [HINDI_REF], "hin_Deva") == zeros
    assert rouge([""], [""], "eng_Latn") == zeros


# ---------------------------------------------------------------- sacrebleu / chrF


def test_sacrebleu_perfect_match_is_100_with_signature():
    out = sacrebleu_scores(["the cat sat on the mat"], ["the cat sat on the mat"], "eng_Latn")
    assert out["sacrebleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    assert "nrefs:1" in out["sacrebleu_signature"]
    assert "tok:13a" in out["sacrebleu_signature"]
    assert "nrefs:1" in out["chrf_signature"]


def test_sacrebleu_partial_match_is_between_bounds():
    out = sacrebleu_scores(["the cat sat on a mat"], ["the cat sat on the mat"], "eng_Latn")
    assert 0.0 < out["sacrebleu"] < 100.0
    assert 0.0 < out["chrf"] < 100.0
    hindi = sacrebleu_scores([HINDI_PRED], [HINDI_REF], "hin_Deva")
    assert 0.0 < hindi["chrf"] < 100.0


def test_sacrebleu_empty_corpus_is_zero():
    out = sacrebleu_scores([], [], "eng_Latn")
    assert out["sacrebleu"] == 0.0 and out["chrf"] == 0.0
    assert "nrefs:1" in out["sacrebleu_signature"]


# ---------------------------------------------------------------- speed


def test_speed_stats_arithmetic():
    s = SpeedStats(seconds=2.0, tokens=50)
    assert s.rtf == pytest.approx(0.04)  # 2 / 50
    assert s.tokens_per_second == pytest.approx(25.0)  # 50 / 2


def test_speed_stats_zero_tokens_and_zero_seconds():
    assert math.isnan(SpeedStats(seconds=1.5, tokens=0).rtf)
    assert SpeedStats(seconds=1.5, tokens=0).tokens_per_second == 0.0
    assert math.isnan(SpeedStats(seconds=0.0, tokens=10).tokens_per_second)


# ---------------------------------------------------------------- compute_all


def test_compute_all_keys_and_values():
    preds, refs = ["the big red ball"], ["the ball"]
    out = compute_all(preds, refs, "eng_Latn")
    assert set(out) == {
        "bleu", "rouge1", "rouge2", "rougeL",
        "sacrebleu", "sacrebleu_signature", "chrf", "chrf_signature",
    }
    assert out["bleu"] == pytest.approx(0.5, abs=1e-9)  # see long-prediction test
    # rouge1: 2 shared of pred 4 / ref 2 -> P=1/2, R=1 -> F = 2/3
    assert out["rouge1"] == pytest.approx(2 / 3, abs=1e-9)


def test_compute_all_length_mismatch_raises():
    with pytest.raises(MedusaError):
        compute_all(["a", "b"], ["a"], "eng_Latn")


def test_compute_all_scores_sacrebleu_and_chrf_against_raw_references():
    """The seed's BLEU-1/ROUGE read its processed references; the standard scores read the raw text.
    """
    raw = ["The cat sat on the mat, didn't it?"]
    processed = ["the cat sat on the mat didnt it"]  # what the seed's cleaning makes of it
    preds = ["The cat sat on the mat, didn't it?"]  # a perfect translation
    out = compute_all(preds, processed, "eng_Latn", raw_references=raw)
    assert out["sacrebleu"] == pytest.approx(100.0) and out["chrf"] == pytest.approx(100.0)
    assert out["bleu"] == pytest.approx(bleu1(preds, processed)) and out["bleu"] < 1.0
    assert out["rouge1"] == pytest.approx(rouge(preds, processed, "eng_Latn")["rouge1"])
    # the old behaviour: every score on processed text
    seed_only = compute_all(preds, processed, "eng_Latn")
    assert seed_only["sacrebleu"] < 100.0 and seed_only["chrf"] < 100.0
    with pytest.raises(MedusaError):
        compute_all(preds, processed, "eng_Latn", raw_references=[])
