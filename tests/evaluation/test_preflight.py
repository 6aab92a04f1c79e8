"""Checks before loading: chat template, head count and tree from the checkpoint's small files; the
seed prompt for models without a chat template (both original checkpoint layouts); bad values
refused before any weight loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medusa.model.checkpoint_facts import (
    count_heads,
    has_chat_template,
    inspect_checkpoint,
    weight_keys,
)
from medusa.model.checkpoints import save_heads, save_medusa1
from medusa.cli import main
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model.loader import EMBEDDED_DEFAULT_DIR
from medusa.evaluation.preflight import resolve_prompt_style

from conftest import make_model, make_tokenizer

# the loader's first line: absent when a check refused the run before it
LOADING = "loading base model"


def heads_on(base, num_heads: int) -> MedusaHeads:
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(num_heads, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=False), lm
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for block in heads.heads:
            block[0].linear.weight.normal_(0, 0.05)
    return heads


@pytest.fixture(scope="module")
def plain_base_dir(tmp_path_factory) -> Path:
    """A base like Vicuna's: a tokenizer with no chat template."""
    folder = tmp_path_factory.mktemp("no-template")
    tok = make_tokenizer()
    tok.chat_template = None
    make_model().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def medusa1_dir(plain_base_dir, tmp_path_factory) -> Path:
    """FasterDecoding's Medusa-1 layout: medusa_lm_head.pt + a config.json that understates the
    heads (2 of 3)."""
    from transformers import AutoModelForCausalLM

    folder = save_medusa1(heads_on(AutoModelForCausalLM.from_pretrained(plain_base_dir), 3),
                          tmp_path_factory.mktemp("m1"), base_model=str(plain_base_dir))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "medusa_num_heads": 2}))
    return folder


@pytest.fixture(scope="module")
def medusa2_dir(plain_base_dir, tmp_path_factory) -> Path:
    """FasterDecoding's Medusa-2 layout: medusa_head.* tensors inside the full model's weights file.
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("m2")
    for f in plain_base_dir.iterdir():
        shutil.copy(f, folder / f.name)
    base = AutoModelForCausalLM.from_pretrained(plain_base_dir)
    state = load_file(str(folder / "model.safetensors"))
    state.update(
        {
            f"medusa_head.{k}": v.clone().contiguous()
            for k, v in heads_on(base, 4).heads.state_dict().items()
        }
    )
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def project_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("project")
    save_heads(
        heads_on(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 3),
        folder,
        str(tiny_model_dir),
    )
    return folder


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- what the files say


def test_chat_template_read_from_the_tokenizer_files(tiny_model_dir, plain_base_dir, tmp_path):
    assert has_chat_template(str(tiny_model_dir)) is True
    assert has_chat_template(str(plain_base_dir)) is False
    assert has_chat_template(str(tmp_path)) is None  # no tokenizer config: cannot tell
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    # older layout: the template inside tokenizer_config.json
    assert has_chat_template(str(tmp_path)) is True


def test_head_counts_from_headers_match_every_layout(
    tiny_model_dir, medusa1_dir, medusa2_dir, project_dir, plain_base_dir
):
    m1 = inspect_checkpoint(str(medusa1_dir), None, None, False)
    # tensors, not the config
    assert (m1.base, m1.num_heads, m1.chat_template) == (str(plain_base_dir), 3, False)
    m2 = inspect_checkpoint(str(medusa2_dir), None, None, False)
    assert (m2.base, m2.num_heads, m2.chat_template) == (str(medusa2_dir), 4, False)
    pr = inspect_checkpoint(str(project_dir), None, None, False)
    assert (pr.base, pr.num_heads, pr.chat_template, pr.tree) == (
        str(tiny_model_dir),
        3,
        True,
        None,
    )
    plain = inspect_checkpoint(str(tiny_model_dir), None, None, False)
    assert plain.num_heads == 0
    # --medusa-heads wins
    given = inspect_checkpoint(str(tiny_model_dir), str(medusa1_dir), None, False)
    assert given.num_heads == 3 and given.chat_template is True
    from medusa.model.loader import LoadSettings, load_model

    # the loader agrees
    for folder, facts in ((medusa1_dir, m1), (medusa2_dir, m2), (project_dir, pr)):
        assert load_model(LoadSettings(str(folder), device="cpu")).num_heads == facts.num_heads


def test_weight_keys_never_fail(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a weights file")
    assert weight_keys(bad) is None and weight_keys(tmp_path / "none.pt") is None
    assert count_heads(["0.0.linear.weight", "2.1.weight", "token_proj.0.weight"]) == 3
    assert (
        count_heads(["medusa_head.1.0.linear.weight", "model.embed_tokens.weight"], "medusa_head.")
        == 2
    )


def test_embedded_facts_without_converting_anything():
    shipped = inspect_checkpoint("embedded", None, None, False)
    assert (shipped.chat_template, shipped.num_heads, shipped.tree) == (
        True,
        5,
        str(EMBEDDED_DEFAULT_DIR / "tree.json"),
    )
    bare = inspect_checkpoint("embedded", None, None, True)
    # untrained identity heads
    assert (bare.chat_template, bare.num_heads, bare.tree) == (True, 5, None)


def test_a_calibrated_tree_beside_heads_is_found(project_dir, tmp_path):
    folder = tmp_path / "heads"
    shutil.copytree(project_dir, folder)
    (folder / "tree.json").write_text('{"paths": [[0], [1]]}')
    assert inspect_checkpoint(str(folder), None, None, False).tree == str(folder / "tree.json")


@pytest.mark.parametrize("style,template,expected", [
    ("auto", True, "chat"), ("auto", False, "seed"), ("auto", None, "auto"),
    ("seed", True, "seed"), ("seed", False, "seed"), ("chat", True, "chat"), ("chat", None, "chat"),
])
def test_prompt_style_resolution(style, template, expected):
    assert resolve_prompt_style(style, template, "m") == expected


def test_chat_without_a_template_is_refused():
    with pytest.raises(MedusaError, match="no chat template: use --prompt-style seed"):
        resolve_prompt_style("chat", False, "m")


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("layout", ["medusa1", "medusa2"])
def test_original_layouts_without_chat_template_get_the_seed_prompt(
    layout, medusa1_dir, medusa2_dir, tmp_path, capsys
):
    folder = medusa1_dir if layout == "medusa1" else medusa2_dir
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        [
            "-m",
            str(folder),
            "-ds",
            "multi-head",
            "-n",
            "2",
            "-mol",
            "6",
            "--no-warmup",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    assert "prompt: seed (the course's plain-text prompt;" in err and "has no chat template" in err
    assert f"setup: your model {folder}" in err and "setup: embedded" not in err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["settings"]["prompt_style"] == "seed"
    # recorded resolved, for --resume
    assert json.loads((out_dir / "run.json").read_text())["prompt_style"] == "seed"
    # the recorded prompt lengths are the seed prompt's, not a chat template's
    from transformers import AutoTokenizer

    from medusa.evaluation.prompts import seed_prompt

    tok = AutoTokenizer.from_pretrained(summary["model"]["base"])
    rows = [json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["prompt_tokens"] == len(tok(seed_prompt(rows[0]["source"]))["input_ids"])
    # asking for the chat template explicitly is refused in one line, before any weight loads
    code, _, err = run_cli(
        ["-m", str(folder), "--prompt-style", "chat", "-n", "1", "-o", str(tmp_path / "x")], capsys
    )
    assert code == 2 and "no chat template: use --prompt-style seed" in err and LOADING not in err


def test_auto_prompt_is_chat_where_a_template_exists(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(["-m", str(tiny_model_dir), "-n", "1", "-mol", "4", "--no-warmup", "-o",
                            str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "prompt: chat (the tokenizer's chat template" in err
    assert (
        json.loads((tmp_path / "r" / "summary.json").read_text())["settings"]["prompt_style"]
        == "chat"
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-nmh", "4", "-ds", "multi-head"], "more heads than the checkpoint has (3)"),
        (["-ds", "tree", "--tree", "builtin", "-nmh", "3", "--tree-size", "2000"], "at most 1024"),
        (["--generator", "nocolon"], "FILE.py:ClassName"),
        (["--generator", "missing.py:X"], "does not exist: check the path"),
        (
            [
                "--generator",
                str(Path(__file__).resolve().parents[2] / "docs" / "example_submission.py")
                + ":Nope",
            ],
            "has no Nope; its classes: MedusaTextGenerator, ReturnsThePromptToo",
        ),
        (["--assignment-table"], "needs 5 Medusa heads"),
    ],
)
def test_bad_values_fail_before_loading(project_dir, tmp_path, capsys, args, needle):
    code, _, err = run_cli(
        ["-m", str(project_dir), "-n", "1", "-o", str(tmp_path / "o"), *args], capsys
    )
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0], err
    assert LOADING not in err and "Traceback" not in err


def test_strategy_without_heads_fails_before_loading(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(
        ["-m", str(tiny_model_dir), "-ds", "tree", "-n", "1", "-o", str(tmp_path)], capsys
    )
    assert code == 2 and "needs Medusa heads" in err and LOADING not in err


def test_tree_size_of_a_shipped_tree_is_checked_before_loading(project_dir, tmp_path, capsys):
    folder = tmp_path / "heads"
    shutil.copytree(project_dir, folder)
    (folder / "tree.json").write_text('{"paths": [[0], [1]]}')  # no calibration accuracies kept
    code, _, err = run_cli(["-m", str(folder), "-ds", "tree", "--tree-size", "5", "-n", "1", "-o",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "keeps no calibration accuracies" in err and LOADING not in err


@pytest.mark.parametrize("table", [False, True])
def test_a_submission_is_imported_once(project_dir, tiny_model_dir, tmp_path, capsys, table):
    student = tmp_path / "counting.py"
    marker = tmp_path / "imports.txt"
    student.write_text(f'''
import torch
with open({str(marker)!r}, "a") as f:
    f.write("x")


class Gen:
    def __init__(self, model, decoding_strategy, eos_id, use_no_medusa_heads, beam_width,
                 max_output_len):
        self.n = max_output_len

    def __call__(self, input_ids):
        return torch.tensor([5] * self.n)
''')
    model = project_dir
    if table:  # seven rows, one import: the assignment table needs 5 heads
        from transformers import AutoModelForCausalLM

        model = tmp_path / "five"
        save_heads(
            heads_on(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 5),
            model,
            str(tiny_model_dir),
        )
    code, _, err = run_cli(
        [
            "-m",
            str(model),
            "-n",
            "1",
            "-mol",
            "3",
            "--no-warmup",
            "--prompt-style",
            "seed",
            "--generator",
            f"{student}:Gen",
            "-o",
            str(tmp_path / "g"),
        ]
        + (["--assignment-table"] if table else []),
        capsys,
    )
    assert code == 0, err
    assert marker.read_text() == "x"


def test_subcommands_pick_the_seed_prompt_without_a_chat_template(medusa1_dir, tmp_path, capsys):
    tree = tmp_path / "tree.json"
    assert (
        main(
            [
                "calibrate-tree",
                "-m",
                str(medusa1_dir),
                "-n",
                "2",
                "-mol",
                "6",
                "--tree-size",
                "5",
                "-o",
                str(tree),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert len(json.loads(tree.read_text())["paths"]) == 5
    out = tmp_path / "acc"
    assert (
        main(
            [
                "measure-acceptance",
                "-m",
                str(medusa1_dir),
                "-d",
                "flores200-sample",
                "-n",
                "2",
                "-mol",
                "6",
                "--multi-head",
                "2:2",
                "--device",
                "cpu",
                "-o",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert json.loads((out / "acceptance.json").read_text())["prompt_style"] == "seed"
    code = main(
        [
            "calibrate-tree",
            "-m",
            str(medusa1_dir),
            "-n",
            "1",
            "--prompt-style",
            "chat",
            "-o",
            str(tree),
        ]
    )
    assert code == 2 and "no chat template" in capsys.readouterr().err


def test_default_output_folder_does_not_call_a_users_model_embedded():
    from medusa.runner import default_output_dir
    from medusa.settings import RunSettings

    assert default_output_dir(RunSettings(model_name="my/model")).name.startswith(
        "own-single-head-"
    )
    assert default_output_dir(RunSettings()).name.startswith("embedded-single-head-")
