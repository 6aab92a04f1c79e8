"""Submissions written against FasterDecoding's library run unchanged: each call pattern real course
submissions use, in a small generator of our own, graded through the real ``--generator`` path on
the tiny model."""

from __future__ import annotations

import pytest
import torch
from student_helpers import grade, report, rows

from medusa.model import MedusaModel

HEADER = '''
import torch
from jaxtyping import Int
from medusa.model.medusa_model import MedusaModel
from medusa.model.medusa_model_new import MedusaModel as MedusaModelNew


class Base:
    """The course's constructor; subclasses implement next_logits(input_ids) or __call__."""

    def __init__(self, model: MedusaModel, decoding_strategy, eos_id, use_no_medusa_heads=5,
                 beam_width=2, max_output_len=10):
        assert isinstance(model, MedusaModel) and isinstance(model, MedusaModelNew)
        self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len
        self.heads = use_no_medusa_heads

    def __call__(self, input_ids: Int[torch.Tensor, "1 P"]):
        out = []
        for _ in range(self.max_output_len):
            nxt = int(self.next_logits(input_ids)[0, -1].argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            input_ids = torch.cat([input_ids, torch.tensor([[nxt]])], dim=1)
        return torch.tensor(out)
'''

PATTERNS = HEADER + '''

class PlainCall(Base):
    """self.model(input_ids).logits: the base causal-LM output by default."""

    def next_logits(self, input_ids):
        return self.model(input_ids).logits


class DecoderAndHead(Base):
    """self.model.model(...) (the decoder) then self.model.lm_head(...)."""

    def next_logits(self, input_ids):
        hidden = self.model.model(input_ids)[0]
        assert torch.equal(hidden, self.model.model(input_ids=input_ids).last_hidden_state)
        return self.model.lm_head(hidden)


class BaseModelAttributes(Base):
    """self.model.base_model.model / .lm_head, as the original's base_model link."""

    def next_logits(self, input_ids):
        base = self.model.base_model
        return base.lm_head(base.model(input_ids).last_hidden_state)


class MedusaForward(Base):
    """The Medusa path: (medusa_logits [K,B,L,V], outputs, orig logits)."""

    def next_logits(self, input_ids):
        medusa_logits, outputs, orig = self.model(input_ids, medusa_forward=True, output_orig=True)
        assert medusa_logits.shape[0] == self.model.medusa == len(self.model.medusa_head)
        return orig


class WithCache(Base):
    """model(input_ids, past_key_values=..., use_cache=True) then .past_key_values, one new token
    per call."""

    def __call__(self, input_ids):
        out, past, feed = [], None, input_ids
        for _ in range(self.max_output_len):
            result = self.model(feed, past_key_values=past, use_cache=True)
            past = result.past_key_values
            nxt = int(result.logits[0, -1].argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            feed = torch.tensor([[nxt]])
        return torch.tensor(out)


class DecoderWithCache(Base):
    """self.model.model(..., past_key_values=..., use_cache=True), then self.model.lm_head on the
    last state."""

    def __call__(self, input_ids):
        out, past, feed = [], None, input_ids
        for _ in range(self.max_output_len):
            result = self.model.model(input_ids=feed, past_key_values=past, use_cache=True)
            past = result.past_key_values
            nxt = int(self.model.lm_head(result.last_hidden_state[:, -1]).argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            feed = torch.tensor([[nxt]])
        return torch.tensor(out)


class MedusaHeadsVerified(Base):
    """Multi-head: draft with self.model.medusa_head[k](hidden), keep the draft while the base model
    agrees."""

    def __call__(self, input_ids):
        out = []
        while len(out) < self.max_output_len:
            hidden = self.model.model(input_ids).last_hidden_state
            first = int(self.model.lm_head(hidden[:, -1]).argmax())
            heads = self.model.medusa_head
            draft = [first] + [int(heads[k](hidden[:, -1]).argmax()) for k in range(self.heads)]
            check = self.model(torch.cat([input_ids, torch.tensor([draft])], dim=1)).logits[0]
            P = input_ids.shape[1]
            accepted = [first]
            for i in range(1, len(draft)):
                if int(check[P + i - 1].argmax()) != draft[i]:
                    break
                accepted.append(draft[i])
            for t in accepted:
                if t == self.eos_id or len(out) == self.max_output_len:
                    return torch.tensor(out)
                out.append(t)
            input_ids = torch.cat([input_ids, torch.tensor([accepted])], dim=1)
        return torch.tensor(out)
'''


@pytest.mark.parametrize(
    "cls",
    [
        "PlainCall",
        "DecoderAndHead",
        "BaseModelAttributes",
        "MedusaForward",
        "WithCache",
        "DecoderWithCache",
    ],
)
def test_call_patterns_grade_identical_to_our_single_head(cls, student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / cls
    code, out, err = grade(PATTERNS, cls, student_heads_dir, out_dir, capsys)
    assert code == 0, err
    graded = rows(out_dir)
    assert [r["error"] for r in graded] == [None] * 3 and all(r["tokens"] > 0 for r in graded)
    rep = report(out_dir)
    assert rep["completed"] == 3 and all(c["passed"] == 3 for c in rep["checks"].values())
    assert rep["reference"]["agreement"]["identical"] == 3, rep["reference"]
    assert [r["token_ids"] for r in rows(out_dir, "ours.jsonl")] == [r["token_ids"] for r in graded]


def test_multi_head_submission_using_medusa_head_matches_our_greedy_multi_head(
    student_heads_dir, tmp_path, capsys
):
    out_dir = tmp_path / "multi"
    code, out, err = grade(PATTERNS, "MedusaHeadsVerified", student_heads_dir, out_dir, capsys,
                           "-ds", "multi-head", "-nmh", "3", mol=12)
    assert code == 0, err
    rep = report(out_dir)
    lossless = rep["second_reference"]
    assert rep["strategy"] == "multi-head" and lossless["name"] == "lossless"
    assert lossless["agreement"]["identical"] == 3 and lossless["file"] == "ours-lossless.jsonl"
    assert (
        "lossless: our multi-head, greedy acceptance: single-head's tokens (ours-lossless.jsonl)"
        in out
    )
    assert "token agreement: identical 3/3" in out.split("\n  lossless: ")[1]


def test_forward_defaults_to_the_base_causal_lm_output(student_heads_dir):
    from medusa.model.loader import LoadSettings, load_model

    model = load_model(LoadSettings(str(student_heads_dir), device="cpu"))
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        plain = model(ids)
        assert torch.allclose(plain.logits, model.base_model(ids).logits, atol=1e-6)
        step = model(ids[:, :3], past_key_values=None, use_cache=True)
        nxt = model(ids[:, 3:], past_key_values=step.past_key_values, use_cache=True)
        assert torch.allclose(nxt.logits[0, -1], plain.logits[0, -1], atol=1e-4)
        assert model.model is model.base_model.get_decoder()
        assert model.lm_head is model.base_model.get_output_embeddings()
        heads = model(ids, medusa_forward=True)
        assert heads.shape == (3, 1, 4, model.vocab_size)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_submission_that_needs_cuda_is_one_line(student_heads_dir, tmp_path, capsys):
    source = HEADER + '''

class OnCuda(Base):
    def next_logits(self, input_ids):
        return self.model(input_ids.cuda()).logits


class CudaInInit(Base):
    def __init__(self, model, *args):
        super().__init__(model, *args)
        self.model = model.cuda()
'''
    for cls in ("OnCuda", "CudaInInit"):
        code, out, err = grade(source, cls, student_heads_dir, tmp_path / cls, capsys)
        lines = err.strip().splitlines()
        assert (
            code == 2 and "this submission needs CUDA" in lines[-1] and "Traceback" not in err
        ), err
        assert "_submission.py:" in lines[-1]


def test_missing_package_import_is_one_line(student_heads_dir, tmp_path, capsys):
    code, out, err = grade(
        "import no_such_package_for_grading\n", "X", student_heads_dir, tmp_path / "imp", capsys
    )
    assert code == 2 and "imports 'no_such_package_for_grading', which is not installed" in err
    assert "Traceback" not in err


def test_model_package_keeps_every_import_path():
    import medusa.model as package
    from medusa.model import END_OF_TURN_TOKENS, ModelInfo, StepOutput, stop_token_ids  # noqa: F401
    from medusa.model.medusa_model import MedusaModel as Old
    from medusa.model.medusa_model_new import MedusaModel as New

    assert Old is New is MedusaModel is package.MedusaModel


@pytest.mark.parametrize("strategy", ["single-head", "multi-head"])
def test_documented_example_submission_agrees_with_ours(
    strategy, student_heads_dir, tmp_path, capsys
):
    """docs/example_submission.py, the README's grading example, graded as the README shows."""
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "docs" / "example_submission.py").read_text()
    out_dir = tmp_path / strategy
    code, out, err = grade(
        source,
        "MedusaTextGenerator",
        student_heads_dir,
        out_dir,
        capsys,
        "-ds",
        strategy,
        "-nmh",
        "3",
        mol=12,
    )
    assert code == 0, err
    rep = report(out_dir)
    # the lossless one
    lossless = rep["reference"] if strategy == "single-head" else rep["second_reference"]
    assert lossless["agreement"]["identical"] == 3
    name = "ours" if strategy == "single-head" else "lossless"
    assert f"metrics, submission - {name}: BLEU +0.0000" in out and "sacreBLEU +0.00" in out
