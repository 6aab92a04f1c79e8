"""Flag values and files that would crash, hang or overflow an unchecked run, end to end through the
CLI: one `error:` line that says what to do, exit 2, no traceback (refused before any model loads
wherever the value alone tells), and the warning a token given on the command line earns."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from medusa.decoding.trees import MAX_TREE_NODES
from medusa.model import hub
from medusa.runtime.threads import default_threads, max_threads
from medusa.arg_types import MAX_SEED
from test_bad_input import assert_one_line_error, bad_input, cli

# the output flag of each command, pointed below a file: a bad value the parser let through then
# fails fast on
# the output instead (a different line), rather than training or decoding with it
OUTPUT_FLAG = {
    "calibrate-tree": "--output",
    "train-heads": "--output-dir",
    "finetune": "--output-dir",
}


def with_blocked_output(args: list[str], tmp_path: Path) -> list[str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return args + [OUTPUT_FLAG.get(args[0], "-o"), str(blocker / "out")]


# ------------------------------------------------------------ numbers refused where they are parsed


FINETUNE = ["finetune", "--train-data", "flores200-sample"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--threads", "100000"], f"at most {max_threads()}"),
        (["--seed", "99999999999999999999999"], f"from 0 to {MAX_SEED}"),
        (["--seed", "-1"], f"from 0 to {MAX_SEED}"),
        (["--timeout", "1e-9"], "at least 0.1"),
        (["train-heads", "--lr", "nan"], "--lr: must be a finite number above 0, got nan"),
        (["train-heads", "--lr", "inf"], "--lr: must be a finite number above 0"),
        (["train-heads", "--lr=-1e-3"], "--lr: must be a finite number above 0"),
        (
            ["train-heads", "--max-new-tokens", "0"],
            "--max-new-tokens: must be a whole number at least 1, got 0",
        ),
        (
            ["train-heads", "--generation-batch-size", "0"],
            "--generation-batch-size: must be a whole number at least 1",
        ),
        (
            ["train-heads", "--sample-temperature", "0"],
            "--sample-temperature: must be a finite number above 0",
        ),
        (
            ["train-heads", "--samples-per-source", "-1"],
            "--samples-per-source: must be a whole number at least 0",
        ),
        (
            ["train-heads", "--heldout-fraction", "1"],
            "--heldout-fraction: must be a finite number in [0, 1)",
        ),
        (
            ["train-heads", "--weight-decay", "-0.5"],
            "--weight-decay: must be a finite number at least 0",
        ),
        (["train-heads", "--head-decay", "nan"], "--head-decay: must be a finite number above 0"),
        (
            ["train-heads", "--feature-loss-weight", "inf"],
            "--feature-loss-weight: must be a finite number at least 0",
        ),
        (["train-heads", "--eval-every", "0"], "--eval-every: must be a whole number at least 1"),
        (
            ["train-heads", "--seed", "99999999999999999999999"],
            f"--seed: must be a whole number from 0 to {MAX_SEED}",
        ),
        ([*FINETUNE, "--lr", "nan"], "--lr: must be a finite number above 0"),
        ([*FINETUNE, "--dropout", "1"], "--dropout: must be a finite number in [0, 1)"),
        (
            [*FINETUNE, "--max-target-len", "0"],
            "--max-target-len: must be a whole number at least 1",
        ),
        ([*FINETUNE, "--seed", "-5"], "--seed: must be a whole number from 0"),
        (["calibrate-tree", "--tree-size", "100000"], f"at most {MAX_TREE_NODES} nodes"),
    ],
)
def test_out_of_range_number_is_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_input(with_blocked_output(args, tmp_path), capsys, needle, before_loading=True)


def test_thread_count_from_the_environment_is_capped(monkeypatch):
    """OMP_NUM_THREADS wins over the default, but not up to a count torch cannot start."""
    monkeypatch.setenv("OMP_NUM_THREADS", "100000")
    assert default_threads() == max_threads()


# ---------------------------------------------------------------- tree files


def tree_run(heads: Path, tree: Path, out: Path) -> list[str]:
    return [
        "-m",
        str(heads),
        "-ds",
        "tree",
        "--tree",
        str(tree),
        "-n",
        "1",
        "-mol",
        "4",
        "--prompt-style",
        "seed",
        "--no-warmup",
        "-o",
        str(out),
    ]


def test_tree_file_nested_too_deep(student_heads_dir, tmp_path, capsys):
    tree = tmp_path / "deep.json"
    tree.write_text("[" * 200_000 + "]" * 200_000)
    bad_input(
        tree_run(student_heads_dir, tree, tmp_path / "o"),
        capsys,
        "nests its lists too deeply",
        before_loading=True,
    )


def test_tree_path_holding_nested_lists_is_quoted_short(student_heads_dir, tmp_path, capsys):
    tree = tmp_path / "nested.json"
    # parses; a rank index that is a list
    tree.write_text("[[" + "[" * 400 + "0" + "]" * 400 + "]]")
    line = bad_input(
        tree_run(student_heads_dir, tree, tmp_path / "o"),
        capsys,
        "rank indices must be integers",
        before_loading=True,
    )
    assert len(line) < 300, line


def test_tree_file_with_too_many_nodes(student_heads_dir, tmp_path, capsys):
    tree = tmp_path / "wide.json"
    tree.write_text(json.dumps({"paths": [[r] for r in range(40_400)]}))
    line = bad_input(tree_run(student_heads_dir, tree, tmp_path / "o"), capsys,
                     f"has 40400 paths, more than the {MAX_TREE_NODES}", before_loading=True)
    assert "--tree-size" in line


# ---------------------------------------------------------------- calibrate-tree --max-rank


def test_max_rank_beyond_the_vocabulary(student_heads_dir, tmp_path, capsys):
    out = tmp_path / "tree.json"
    bad_input(
        [
            "calibrate-tree",
            "-m",
            str(student_heads_dir),
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "--max-rank",
            "401",
            "-o",
            str(out),
        ],
        capsys,
        "--max-rank 401 is more than the model's vocabulary of 400 tokens",
    )
    assert not out.exists()


# ------------------------------------------------------------ a hub that answers with server errors


class ServerError(http.server.BaseHTTPRequestHandler):
    """Answers every request with HTTP 500, as a hub in trouble does."""

    def answer(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = answer

    def log_message(self, *args) -> None:  # quiet on the test's stderr
        pass


@pytest.fixture
def failing_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ServerError)
    worker = threading.Thread(target=server.serve_forever, daemon=True)
    worker.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(hub, "_network_down", False)
    yield
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "args,name",
    [
        (["-m", "nobody/some-model", "-n", "1"], "nobody/some-model"),
        (["-d", "nobody/some-data", "-n", "1"], "nobody/some-data"),
        (
            ["train-heads", "--model-name", "nobody/some-model", "--num-examples", "1"],
            "nobody/some-model",
        ),
    ],
)
def test_hub_server_error_fails_fast(args, name, failing_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    line = bad_input(
        args + [OUTPUT_FLAG.get(args[0], "-o"), str(tmp_path / "o")],
        capsys,
        "answered HTTP 500",
        before_loading=True,
    )
    assert time.perf_counter() - start < 5
    assert name in line and "retry later" in line and "local folder" in line
    assert not hub.network_down()  # the hub is there: nothing says "no connection"


def test_server_error_from_a_download_is_one_line(monkeypatch):
    """A hub whose probe passed but whose download answers 5xx (after the library's own retries)."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    from medusa.errors import MedusaError

    def refused(*args, **kwargs):  # the fields HfHubHTTPError reads of a response
        raise HfHubHTTPError(
            "503 Server Error", response=SimpleNamespace(status_code=503, headers={}, request=None)
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with pytest.raises(
        MedusaError,
        match=r"cannot load 'owner/model': .* answered HTTP 503, a server error: retry ",
    ):
        hub.fetch("owner/model", "config.json")


# ---------------------------------------------------------------- --hf-token on the command line


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_token_flag_warns_that_others_can_read_it(tiny_model_dir, tmp_path, capsys, monkeypatch):
    secret = "hf_" + "s" * 30
    main_run = [
        "-m",
        str(tiny_model_dir),
        "-n",
        "1",
        "-d",
        str(tmp_path / "no-such.jsonl"),
        "-o",
        str(tmp_path / "o"),
    ]
    code, _, err = cli(main_run + ["--hf-token", secret], capsys)
    assert code == 2 and len(warnings_in(err)) == 1, err
    warning = warnings_in(err)[0]
    assert (
        "HF_TOKEN" in warning
        and "login" in warning
        and "--setup seed" in warning
        and secret not in err
    )
    code, _, err = cli(
        with_blocked_output(
            ["train-heads", "--model-name", str(tiny_model_dir), "--hf-token", secret], tmp_path
        ),
        capsys,
    )
    assert code == 2 and len(warnings_in(err)) == 1 and "HF_TOKEN" in warnings_in(err)[0], err
    monkeypatch.setenv("HF_TOKEN", secret)  # the way the warning recommends: no warning
    code, _, err = cli(main_run + ["--setup", "seed"], capsys)
    assert code == 2 and not warnings_in(err), err


@pytest.mark.parametrize("scrubbed", [True, False])
def test_graded_run_warns_about_the_token_once(
    scrubbed, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """Grading scrubs the token from the command line or says it could not; never both that and the
    general warning."""
    import medusa.grading.isolation

    monkeypatch.setattr(medusa.grading.isolation, "scrub_command_line", lambda token: scrubbed)
    code, _, err = cli(
        [
            "-m",
            str(tiny_model_dir),
            "-n",
            "1",
            "--hf-token",
            "hf_x",
            "--setup",
            "embedded",
            "--generator",
            str(tmp_path / "missing.py") + ":Generator",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and len(warnings_in(err)) == 1, err
    assert ("the submission can read it" in warnings_in(err)[0]) == (not scrubbed)
