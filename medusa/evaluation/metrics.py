"""Translation quality and speed metrics, computed offline and deterministically.

The seed evaluation used HF ``evaluate`` (``bleu`` with ``max_order=1`` and
``rouge``). ``evaluate`` downloads metric scripts from the Hub, which fails
offline, so the same quantities are reimplemented here on top of sacrebleu and
rouge-score, plus standard sacreBLEU-4 and chrF for comparability with
published MT numbers. The seed's two scores read the seed's processed references
(lower-cased, punctuation stripped, cut to the output budget); sacreBLEU and chrF
read the raw references, as everyone else who reports them does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import regex
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from medusa.errors import MedusaError

__all__ = [
    "SpeedStats",
    "UnicodeWordTokenizer",
    "bleu1",
    "compute_all",
    "rouge",
    "sacrebleu_scores",
]

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_TOKENIZER_13A = Tokenizer13a()
# Letters, combining marks (matras, virama, nukta) and digits form words;
# everything else separates. Marks must be included or Indic words get split.
_WORD_RE = regex.compile(r"[\p{L}\p{M}\p{N}]+")


def _check_lengths(predictions: list[str], references: list[str]) -> None:
    """Fail loudly: zip() would silently drop the unmatched tail."""
    if len(predictions) != len(references):
        raise MedusaError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "every prediction needs exactly one reference"
        )


def bleu1(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU with unigrams only, equal to HF evaluate's ``bleu(max_order=1)``.

    Kept because the seed reported this number. Both sides use sacrebleu's 13a
    tokenizer (case-sensitive). Precision is clipped unigram matches over all
    prediction tokens; the brevity penalty uses total lengths c and r.
    An empty corpus or zero prediction tokens returns 0.0 (evaluate would
    divide by zero there). Range 0-1.
    """
    _check_lengths(predictions, references)
    matches = pred_len = ref_len = 0
    for prediction, reference in zip(predictions, references):
        pred_tokens = _TOKENIZER_13A(prediction).split()
        ref_tokens = _TOKENIZER_13A(reference).split()
        pred_len += len(pred_tokens)
        ref_len += len(ref_tokens)
        overlap = Counter(pred_tokens) & Counter(ref_tokens)  # min counts = clipping
        matches += sum(overlap.values())
    if pred_len == 0 or matches == 0:
        return 0.0
    precision = matches / pred_len
    ratio = pred_len / ref_len  # ref_len > 0 here since matches > 0
    brevity_penalty = 1.0 if ratio > 1.0 else math.exp(1.0 - 1.0 / ratio)
    return precision * brevity_penalty


class UnicodeWordTokenizer:
    """ROUGE tokenizer for non-Latin scripts.

    rouge-score's default tokenizer keeps only ``[a-z0-9]``, which turns every
    Devanagari/Bengali/Tamil/Arabic-script sentence into zero tokens and a
    score of 0. This one lowercases and keeps maximal runs of Unicode letters,
    combining marks and digits, so vowel signs and viramas stay in the word.
    """

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into words; the interface rouge-score expects."""
        return _WORD_RE.findall(text.lower())


def _rouge_tokenizer(target_lang: str) -> UnicodeWordTokenizer | None:
    """Latin targets keep rouge-score's default so English matches evaluate."""
    return None if target_lang.endswith("_Latn") else UnicodeWordTokenizer()


def rouge(predictions: list[str], references: list[str], target_lang: str) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over examples (no stemming). Range 0-1.

    HF evaluate's default reports the median of 1000 bootstrap resamples of
    this mean, which is random; we report the plain mean, the deterministic
    quantity the bootstrap estimates. ``target_lang`` (FLORES code such as
    ``eng_Latn`` or ``hin_Deva``) picks the tokenizer. Empty input gives 0.0.
    """
    _check_lengths(predictions, references)
    # imports nltk and scipy (~1 s): only when scoring, not for a bad flag
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(
        list(_ROUGE_TYPES), use_stemmer=False, tokenizer=_rouge_tokenizer(target_lang)
    )
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(target=reference, prediction=prediction)  # (target, prediction)
        for name in _ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    count = len(predictions)
    return {name: (total / count if count else 0.0) for name, total in totals.items()}


def sacrebleu_scores(
    predictions: list[str], references: list[str], target_lang: str
) -> dict[str, object]:
    """Standard sacreBLEU-4 and chrF (0-100) with their reproducibility signatures.

    Always uses sacreBLEU's default 13a tokenizer: ``flores200`` would suit
    Indic targets better but needs sentencepiece plus a model download, which
    is not available offline. ``target_lang`` is accepted so a script-aware
    choice can be made later without changing callers. An empty corpus scores
    0 (sacrebleu itself would raise on it).
    """
    del target_lang  # 13a for every target; see docstring
    _check_lengths(predictions, references)
    if not predictions:
        predictions, references = [""], [""]  # sacrebleu needs >=1 segment for a signature
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(predictions, [references])
    chrf_score = chrf.corpus_score(predictions, [references])
    return {
        "sacrebleu": float(bleu_score.score),
        "sacrebleu_signature": str(bleu.get_signature()),
        "chrf": float(chrf_score.score),
        "chrf_signature": str(chrf.get_signature()),
    }


@dataclass
class SpeedStats:
    """Generation timing: total wall seconds inside the generator and tokens produced."""

    seconds: float
    tokens: int

    @property
    def rtf(self) -> float:
        """Seconds per generated token (the seed's "RTF"); NaN when nothing was generated."""
        return self.seconds / self.tokens if self.tokens else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Throughput; NaN when no time was measured (a rate would be meaningless)."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def compute_all(
    predictions: list[str],
    references: list[str],
    target_lang: str,
    raw_references: list[str] | None = None,
) -> dict[str, object]:
    """Every quality metric in one flat dict, ready for a results row.

    ``references`` are the seed's processed ones (BLEU-1 and ROUGE); ``raw_references`` the
    dataset's own text, which standard sacreBLEU and chrF need to be comparable with published
    numbers (None: the same as ``references``).
    """
    _check_lengths(predictions, references)
    raw = references if raw_references is None else raw_references
    _check_lengths(predictions, raw)
    results: dict[str, object] = {"bleu": bleu1(predictions, references)}
    results.update(rouge(predictions, references, target_lang))
    results.update(sacrebleu_scores(predictions, raw, target_lang))
    return results
