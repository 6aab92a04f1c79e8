"""Bad input, end to end through the CLI: one `error:` line that says what to do, exit 2, no
traceback, no library log lines, nothing lost, and (where the input can be checked first) refused
before any model loads.

A submission's bad return values (a ``str``, ids >= the vocabulary, ...) fail one example, not the
run: those cases are in test_student_harness.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from medusa.model import embedded, hub
from medusa.model.checkpoints import save_heads
from medusa.cli import interrupted_message, main
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.output_dir import LOCK_FILE, claimed_folder
from medusa.evaluation.prompts import encode_prompts, fit_prompt
from medusa.runtime.threads import MAX_DEFAULT_THREADS, default_threads

ROOT = Path(__file__).resolve().parents[1]
# every stderr line a failed run may print besides its error: our own progress lines, never a
# library's
OWN_LINES = (
    "setup:",
    "loading base model",
    "model:",
    "data:",
    "prompt:",
    "note:",
    "warning:",
    "error:",
    "interrupted:",
)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, needle: str, before_loading: bool = False) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and needle in errors[0], err
    assert "Traceback" not in err
    strays = [line for line in err.splitlines() if line.strip() and not line.startswith(OWN_LINES)]
    assert not strays, f"library lines leaked: {strays}"
    if before_loading:
        assert "loading base model" not in err, err
    return errors[0]


def bad_input(args: list[str], capsys, needle: str, before_loading: bool = False) -> str:
    code, _, err = cli(args, capsys)
    return assert_one_line_error(code, err, needle, before_loading)


@pytest.fixture(scope="module")
def heads_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Two trained-shape (shared projection) heads on the tiny model, saved in the project format.
    """
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(2, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm
    )
    folder = tmp_path_factory.mktemp("bad-input-heads")
    save_heads(heads, folder, str(tiny_model_dir))
    return folder


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


HINDI = "उन्होंने कहा कि अब हमारे पास चार महीने उम्र वाले चूहे हैं।"
ROWS = [{"hin_Deva": HINDI, "eng_Latn": "We now have four month old mice."},
        {"hin_Deva": "नमस्ते दुनिया", "eng_Latn": "Hello world."}]


# ----------------------------------------------------------------------------- the flags themselves


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--beam-width", "0"], "at least 1"),
        (["-nmh", "two"], "whole number"),
        (["--decoding-strategy", "sideways"], "invalid choice"),
        (["--no-such-flag"], "unrecognized"),
        (["--src-lang", "hindi"], "unknown language code"),
        (["--tgt-lang", "xyz_Latn"], "unknown language code"),
        (["-m", "nobody/no-such-model-xyz", "-n", "1"], "no-such-model-xyz"),
        (["-d", "/no/such/file.jsonl"], "does not exist"),
        (["--threads", "0"], "at least 1"),
        (
            ["-ds", "single-head", "--dynamic-tree", "8"],
            "--dynamic-tree is a tree strategy: add -ds tree",
        ),
        # the seed's default strategy
        (["--setup", "seed", "--tree-size", "3"], "add -ds tree (not single-head)"),
        (["-ds", "tree", "--dynamic-tree", "8", "--tree-size", "15"], "drop --tree / --tree-size"),
        (["-ds", "tree", "--dynamic-tree", "0"], "at least 1"),
        (["--threads", "many"], "whole number or 'auto'"),
        (["-d", ""], "--dataset is empty"),
        (["-m", ""], "--model-name is empty"),
        (["calibrate-tree", "-mol", "0"], "--max-output-len must be at least 1 (got 0)"),
        (["calibrate-tree", "-mil", "0"], "--max-input-len must be at least 1"),
        (["calibrate-tree", "--heads", "0"], "--heads must be at least 1"),
        (["calibrate-tree", "-d", ""], "--dataset is empty"),
        (["measure-acceptance", "-mil", "0"], "--max-input-len"),
        (["train-heads", "--prompt-style", "fancy"], "invalid choice: 'fancy'"),
        (
            ["train-heads", "--joint-lora", "--init-from", "heads"],
            "--init-from starts frozen-base training",
        ),
        (
            ["finetune", "--train-data", "flores200-sample", "--prompt-style", "fancy"],
            "invalid choice: 'fancy'",
        ),
    ],
)
def test_bad_flag_is_one_line(args, needle, capsys, tmp_path, monkeypatch):
    # the subcommands' default outputs land here, if anything were written
    monkeypatch.chdir(tmp_path)
    bad_input(args, capsys, needle, before_loading=True)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------- output folders: checked before any work


def bad_outputs(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [(str(a_file), "is a file, not a folder"), (str(a_file / "sub"), "cannot create"),
             # /proc refuses even root
             ("/proc/medusa-x", "cannot create"), ("/proc/self", "cannot write in")]
    if not IS_ROOT:  # permission bits bind only non-root users
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        cases.append((str(locked), "cannot write in"))
    return cases


def command(kind: str, model: Path, heads: Path, out: str) -> list[str]:
    return {
        "run": [
            "-m",
            str(model),
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "--no-warmup",
            "-o",
            out,
        ],
        "table": [
            "-m",
            str(model),
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "--assignment-table",
            "-o",
            out,
        ],
        "calibrate-tree": [
            "calibrate-tree",
            "-m",
            str(heads),
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "-o",
            str(Path(out) / "tree.json"),
        ],
        "measure-acceptance": [
            "measure-acceptance",
            "-m",
            str(heads),
            "-d",
            "flores200-sample",
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "-o",
            out,
        ],
        "train-heads": [
            "train-heads",
            "--model-name",
            str(model),
            "--num-examples",
            "1",
            "--output-dir",
            out,
        ],
        "finetune": [
            "finetune",
            "-m",
            str(model),
            "--train-data",
            "flores200-sample",
            "--output-dir",
            out,
        ],
    }[kind]


@pytest.mark.parametrize(
    "kind", ["run", "table", "calibrate-tree", "measure-acceptance", "train-heads", "finetune"]
)
def test_unwritable_output_is_refused_before_loading(
    kind, tiny_model_dir, heads_dir, tmp_path, capsys
):
    for out, needle in bad_outputs(tmp_path):
        bad_input(
            command(kind, tiny_model_dir, heads_dir, out), capsys, needle, before_loading=True
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a-file"] + ([] if IS_ROOT else ["read-only"]))  # nothing created on the way


def test_calibrate_output_that_is_a_folder(heads_dir, tmp_path, capsys):
    bad_input(
        ["calibrate-tree", "-m", str(heads_dir), "-n", "1", "-o", str(tmp_path)],
        capsys,
        "is a folder",
        before_loading=True,
    )


def test_failed_run_leaves_no_empty_folder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    bad_input(["-m", str(tiny_model_dir), "-ds", "multi-head", "-n", "1", "-o", str(out)], capsys,
              "needs Medusa heads")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- data loss: locks, resume


HOLD = (
    "import sys, time; from pathlib import Path; from medusa.output_dir import claimed_folder\n"
    "with claimed_folder(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
)


def test_second_run_into_one_folder_is_refused_at_once(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "-m",
        str(tiny_model_dir),
        "-n",
        "2",
        "-mol",
        "4",
        "--prompt-style",
        "seed",
        "--no-warmup",
        "-o",
        str(out),
    ]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        line = bad_input(args, capsys, "another medusa run", before_loading=True)
        assert f"(process {holder.pid})" in line and str(out) in line
        assert time.perf_counter() - start < 10
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    code, _, err = cli(args, capsys)  # the holder is gone (killed: the kernel drops its lock)
    assert code == 0, err
    assert not (out / LOCK_FILE).exists()
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]


def test_lock_is_per_folder_and_released(tmp_path):
    from medusa.errors import MedusaError

    with claimed_folder(tmp_path / "a"):
        with claimed_folder(tmp_path / "b"):  # another folder: no conflict
            pass
        with pytest.raises(MedusaError, match="another medusa run"):
            with claimed_folder(tmp_path / "a"):
                pass
    with claimed_folder(tmp_path / "a"):  # released
        pass


def seed_run(model: Path, out: Path, n: int) -> list[str]:
    return [
        "-m",
        str(model),
        "-n",
        str(n),
        "-mol",
        "4",
        "--prompt-style",
        "seed",
        "--no-warmup",
        "-o",
        str(out),
    ]


def test_resume_after_a_line_cut_inside_a_utf8_character(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(seed_run(tiny_model_dir, out, 2), capsys)[0] == 0
    predictions = out / "predictions.jsonl"
    first = predictions.read_bytes()
    cut = json.dumps({"index": 2, "source": HINDI}, ensure_ascii=False).encode()
    with open(predictions, "ab") as f:
        # a kill mid-write: one byte of a three-byte character
        f.write(cut[: cut.index("ह".encode()) + 1])
    code, _, err = cli(seed_run(tiny_model_dir, out, 3) + ["--resume"], capsys)
    assert code == 0, err
    assert predictions.read_bytes().startswith(first)
    assert [
        json.loads(x)["index"] for x in predictions.read_text(encoding="utf-8").splitlines()
    ] == [0, 1, 2]


def test_resume_rewrite_never_truncates(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A kill while resume rewrites predictions.jsonl (here: just before the new file replaces it)
    loses nothing."""
    import medusa.evaluation.results

    out = tmp_path / "run"
    assert cli(seed_run(tiny_model_dir, out, 2), capsys)[0] == 0
    predictions = out / "predictions.jsonl"
    with open(predictions, "a", encoding="utf-8") as f:
        f.write('{"index": 2, "sou')  # the crash that makes resume rewrite the file
    before = predictions.read_text(encoding="utf-8")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(medusa.evaluation.results.os, "replace", killed)
    code, _, err = cli(seed_run(tiny_model_dir, out, 3) + ["--resume"], capsys)
    assert code == 130 and "--resume" in err
    assert predictions.read_text(encoding="utf-8") == before  # every finished row is still there
    monkeypatch.undo()
    assert cli(seed_run(tiny_model_dir, out, 3) + ["--resume"], capsys)[0] == 0
    assert not list(out.glob("*.tmp"))


# ---------------------------------------------------------------- the embedded GGUF conversion


@pytest.fixture
def fake_conversion(tmp_path, monkeypatch):
    """convert_gguf replaced by a quick writer that records each call (the real one takes ~30 s)."""
    calls = []

    def convert(gguf, target):
        calls.append(target)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "convert_gguf", convert)
    return tmp_path / "cache" / "gguf-0123456789abcdef", calls


def test_conversion_waits_for_another_process(fake_conversion, capsys):
    from medusa.locking import file_lock

    target, calls = fake_conversion
    target.parent.mkdir(parents=True)
    lock = target.parent / f".{target.name}.lock"
    done = []
    with file_lock(lock):
        worker = threading.Thread(
            target=lambda: done.append(embedded.convert_once(Path("x.gguf"), target))
        )
        worker.start()
        time.sleep(0.5)
        assert not done  # waiting, not converting beside us
        target.mkdir()
        (target / "config.json").write_text("{}")  # "the other process" finishes
    worker.join(10)
    assert done and calls == []  # it used the finished folder instead of converting again
    assert "waiting for another process" in capsys.readouterr().err


def test_killed_conversion_leftovers_are_removed(fake_conversion):
    target, calls = fake_conversion
    stale = target.parent / f".convert-{target.name}-abc123"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"\0" * 1024)
    # another file's conversion: not ours to judge
    other = target.parent / ".convert-gguf-ffffffffffffffff-xyz"
    other.mkdir()
    old = target.parent / ".convert-legacy1"  # named before conversions were locked, long abandoned
    old.mkdir()
    os.utime(old, (time.time() - 2 * embedded.LEGACY_STALE_SECONDS,) * 2)
    embedded.convert_once(Path("x.gguf"), target)
    assert calls == [target] and not stale.exists() and not old.exists() and other.exists()


# ---------------------------------------------------------------- data


def test_non_utf8_jsonl(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(
        b'{"hin_Deva": "a", "eng_Latn": "b"}\n{"hin_Deva": "caf\xe9", "eng_Latn": "x"}\n'
    )
    line = bad_input(
        seed_run(tiny_model_dir, tmp_path / "o", 2) + ["-d", str(data)],
        capsys,
        "is not UTF-8",
        before_loading=True,
    )
    assert "line 2" in line


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_jsonl(tiny_model_dir, tmp_path, capsys, text):
    data = tmp_path / "empty.jsonl"
    data.write_text(text)
    line = bad_input(
        seed_run(tiny_model_dir, tmp_path / "o", 2) + ["-d", str(data)],
        capsys,
        "is empty",
        before_loading=True,
    )
    assert "StopIteration" not in line


def test_empty_source_rows(tiny_model_dir, tmp_path, capsys):
    data = jsonl(
        tmp_path / "d.jsonl",
        [ROWS[0], {"hin_Deva": "", "eng_Latn": "x"}, {"hin_Deva": "  ", "eng_Latn": "y"}],
    )
    line = bad_input(
        seed_run(tiny_model_dir, tmp_path / "o", 3) + ["-d", str(data)],
        capsys,
        "empty hin_Deva",
        before_loading=True,
    )
    assert "1, 2" in line


def test_malformed_jsonl_prints_no_library_lines(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"hin_Deva": "a", "eng_Latn": "b"}\n{"hin_Deva": "b", eng\n')
    line = bad_input(
        seed_run(tiny_model_dir, tmp_path / "o", 2) + ["-d", str(data)],
        capsys,
        "cannot read",
        before_loading=True,
    )
    assert "JSON parse error" in line


def test_more_examples_asked_than_the_data_has(tiny_model_dir, tmp_path, capsys):
    data = jsonl(tmp_path / "two.jsonl", ROWS)
    out = tmp_path / "o"
    code, _, err = cli(seed_run(tiny_model_dir, out, 5) + ["-d", str(data)], capsys)
    assert code == 0, err
    notes = [x for x in err.splitlines() if x.startswith("note: --num-examples")]
    assert len(notes) == 1 and "5" in notes[0] and "2 rows" in notes[0]
    assert json.loads((out / "summary.json").read_text())["examples"] == 2


# ---------------------------------------------------------------- prompts


def test_long_chat_prompt_cuts_the_source_and_keeps_the_template(tiny_tokenizer):
    source = HINDI * 6
    full, cut = fit_prompt(tiny_tokenizer, source, "hin_Deva", "eng_Latn", "chat", 10_000)
    assert not cut
    limit = len(full) - 20
    ids, cut = fit_prompt(tiny_tokenizer, source, "hin_Deva", "eng_Latn", "chat", limit)
    assert cut and len(ids) <= limit
    text = tiny_tokenizer.decode(ids)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")  # the assistant turn survives
    kept = text.split(":\n\n", 1)[1].split("<|im_end|>")[0]
    assert kept and source.startswith(kept) and len(kept) < len(source)


def test_long_prompts_are_counted_in_one_note(tiny_tokenizer, capsys):
    long, short = HINDI * 6, "नमस्ते"
    limit = len(fit_prompt(tiny_tokenizer, long, "hin_Deva", "eng_Latn", "chat", 10_000)[0]) - 5
    prompts = encode_prompts(
        tiny_tokenizer, [long, short, long], "hin_Deva", "eng_Latn", "chat", limit
    )
    assert all(len(p) <= limit for p in prompts)
    notes = capsys.readouterr().err.strip().splitlines()
    assert (
        len(notes) == 1
        and notes[0].startswith("note: 2 of 3 prompts")
        and "template kept" in notes[0]
    )
    encode_prompts(tiny_tokenizer, [long, short], "hin_Deva", "eng_Latn", "seed", 12)
    assert "2 of 2 prompts" in capsys.readouterr().err  # the seed's own cut is kept, but said


def test_max_input_len_shorter_than_the_template(tiny_model_dir, tmp_path, capsys):
    bad_input(
        [
            "-m",
            str(tiny_model_dir),
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "chat",
            "-mil",
            "5",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
        "leaves no room for the source",
    )
    predictions = tmp_path / "o" / "predictions.jsonl"
    # no row written; a rerun may use it
    assert not predictions.exists() or predictions.stat().st_size == 0


def test_long_row_end_to_end(tiny_model_dir, tmp_path, capsys):
    data = jsonl(tmp_path / "long.jsonl", [{"hin_Deva": HINDI * 6, "eng_Latn": "x"}, ROWS[1]])
    out = tmp_path / "o"
    code, _, err = cli(
        [
            "-m",
            str(tiny_model_dir),
            "-d",
            str(data),
            "-n",
            "2",
            "-mol",
            "4",
            "--prompt-style",
            "chat",
            "-mil",
            "120",
            "--no-warmup",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "note: 1 of 2 prompts were longer than --max-input-len 120" in err
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["prompt_tokens"] <= 120


# ---------------------------------------------------------------- models and heads


@pytest.mark.parametrize("flag", ["-m", "--medusa-heads", "--adapter"])
@pytest.mark.parametrize("path", ["./no-such-folder", "no/such/deep/folder", "missing.safetensors"])
def test_missing_local_path_says_so(flag, path, tiny_model_dir, tmp_path, capsys):
    args = ["-n", "1", "-o", str(tmp_path / "o"), flag, path] + (
        [] if flag == "-m" else ["-m", str(tiny_model_dir)]
    )
    line = bad_input(args, capsys, "does not exist", before_loading=True)
    assert path in line and "Repo id" not in line and "hub" not in line


class NotATensor:
    """Pickled by reference: loading it would run this module's code, which weights_only refuses."""


@pytest.mark.parametrize("name,content,needle", [
    ("notes.txt", b"hello", "is a file but not a model"),
    ("junk.pt", b"hello, not a pickle", "not a weights file"),
    ("junk.bin", b"not a model", "not a weights file"),
    ("pickled.pt", None, "pickled Python objects"),
])
def test_non_model_file_as_model(name, content, needle, tmp_path, capsys):
    path = tmp_path / name
    if content is None:
        torch.save({"w": NotATensor()}, path)  # a pickle that weights_only refuses
    else:
        path.write_bytes(content)
    line = bad_input(["-m", str(path), "-n", "1", "-o", str(tmp_path / "o")], capsys, needle)
    assert "weights_only" not in line
    if content is not None:  # plain bytes are not a pickle of Python objects: never said to be one
        assert "pickled" not in line


# ---------------------------------------------------------------- the hub without network


def test_no_network_fails_fast_in_one_line(tmp_path):
    """Offline variables unset, hub unreachable: one line within seconds, not ~100 s of retries and
    log lines."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env.update(HF_ENDPOINT="http://127.0.0.1:9", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    for args, needle in ((["-m", "nobody/no-such-model", "-n", "1"], "nobody/no-such-model"),
                         (["-d", "nobody/no-such-data", "-n", "1"], "nobody/no-such-data")):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "medusa.py"), *args, "-o", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert time.perf_counter() - start < 60
        assert_one_line_error(proc.returncode, proc.stderr, needle, before_loading=True)
        assert "unreachable (no connection)" in proc.stderr


def test_probe_only_when_a_name_needs_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_network_down", False)
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda: probes.append(1) or False)
    hub.fail_fast_offline(
        ["embedded", "flores200-sample", None, "./local", str(ROOT)],
        ["embedded", "flores200-sample"],
    )
    assert probes == [] and not hub.network_down()
    hub.fail_fast_offline(["embedded", "owner/model"], ["embedded"])
    assert probes == [1] and hub.network_down() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_unreachable_endpoint_is_seen_quickly(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    assert hub.hub_reachable(timeout=2) is False
    assert time.perf_counter() - start < 5


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("argv,target,resume", [
    ([], "medusa.runner.run", True),
    (["calibrate-tree"], "medusa.measure.calibration_run.run_calibration", False),
    (["measure-acceptance"], "medusa.measure.acceptance_report.run_measure", False),
    (["finetune", "--train-data", "flores200-sample"], "medusa.training.finetune.finetune", False),
    (["train-heads"], "medusa.training.train_heads.train_heads", True),
])
def test_interrupt_suggests_resume_only_where_it_exists(
    argv, target, resume, tmp_path, capsys, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, interrupted)
    out_flag = [] if argv[:1] == ["calibrate-tree"] else ["--output-dir", str(tmp_path / "o")]
    code, _, err = cli(argv + out_flag, capsys)
    assert code == 130 and err.strip().splitlines()[-1].startswith("interrupted:")
    assert ("--resume" in err) == resume, err
    assert "Traceback" not in err


def test_interrupt_messages():
    assert "--resume" in interrupted_message(None) and "--resume" in interrupted_message(
        "train-heads"
    )
    assert "nothing was saved" in interrupted_message("calibrate-tree")


# ---------------------------------------------------------------- threads


def test_threads_flag_sets_torch_and_is_recorded(tiny_model_dir, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        out = tmp_path / "o"
        code, _, err = cli(seed_run(tiny_model_dir, out, 1) + ["--threads", "2"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 2
        assert json.loads((out / "summary.json").read_text())["settings"]["threads"] == 2
        # a resume may use another thread count: it changes speed, not results
        assert (
            cli(seed_run(tiny_model_dir, out, 2) + ["--resume", "--threads", "1"], capsys)[0] == 0
        )
    finally:
        torch.set_num_threads(before)


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3  # the user's choice wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("medusa.runtime.threads.usable_cores", lambda: 16)
    monkeypatch.setattr(os, "getloadavg", lambda: (15.2, 0, 0))
    assert default_threads() == 1  # a busy machine: one thread, not 16 fighting for one idle core
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0, 0))
    assert default_threads() == MAX_DEFAULT_THREADS
    monkeypatch.setattr("medusa.runtime.threads.usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0, 0))
    assert default_threads() == 1


TRANSLATOR, FAITHFUL_MODEL = ["--translator", "faithful"], ["-m", "embedded:faithful"]


@pytest.mark.parametrize("named, extra, needle", [
    (TRANSLATOR, ["-m", "some/model"], "drop --model-name"),
    (TRANSLATOR, ["--hf-token", "hf_x"], "--setup seed"),
    *[(named, extra, needle) for named in (TRANSLATOR, FAITHFUL_MODEL) for extra, needle in (
        (["--medusa-heads", "heads"], "drop --medusa-heads"),
        (["--adapter", "adapter"], "drop --adapter"),
        (["--bare-embedded"], "drop --bare-embedded"))],
])
def test_a_shipped_translator_with_another_model_is_refused_before_loading(
    named, extra, needle, capsys, tmp_path
):
    """Named by the flag or as the model: the faithful translator keeps its own adapter, drafter and
    tree."""
    bad_input(
        [*named, *extra, "-n", "1", "-o", str(tmp_path / "o")], capsys, needle, before_loading=True
    )


def test_a_missing_shipped_translator_says_to_reinstall(monkeypatch, tmp_path):
    from medusa.errors import MedusaError
    from medusa.model import loader
    from medusa.model.embedded import FAITHFUL_NAME

    monkeypatch.setitem(loader.SHIPPED_FOLDERS, FAITHFUL_NAME, tmp_path / "gone")
    with pytest.raises(MedusaError, match="reinstall"):
        loader.load_model(loader.LoadSettings(FAITHFUL_NAME, device="cpu"))


def test_training_on_a_shipped_translator_records_its_adapter(tmp_path):
    """train-heads on embedded:faithful trains on the embedded base with the faithful adapter, named
    as such (so the heads record and copy it); finetune refuses it, and so does the loader beside
    another adapter."""
    from medusa.errors import MedusaError
    from medusa.model import loader
    from medusa.model.embedded import EMBEDDED_NAME, FAITHFUL_NAME
    from medusa.training.finetune import FinetuneSettings, finetune

    assert loader.training_base(FAITHFUL_NAME, None) == (
        EMBEDDED_NAME,
        str(loader.SHIPPED_FOLDERS[FAITHFUL_NAME] / "adapter"),
    )
    assert loader.training_base("some/model", "a") == ("some/model", "a")
    with pytest.raises(MedusaError, match="drop --adapter"):
        loader.training_base(FAITHFUL_NAME, "mine")
    with pytest.raises(MedusaError, match="--model-name embedded"):
        finetune(
            FinetuneSettings(
                model_name=FAITHFUL_NAME, train_data=["x"], output_dir=str(tmp_path / "a")
            )
        )
    with pytest.raises(MedusaError, match="drop --adapter"):
        loader.load_model(loader.LoadSettings(FAITHFUL_NAME, adapter="mine", device="cpu"))


def test_the_course_command_offline_points_at_what_runs_offline(capsys):
    """The seed setup offline: each error names the way to the offline default, never a flag the
    user did not pass; following the data error's advice leads to the model's, which says the same.
    """
    first = bad_input(
        ["--hf-token", "<your_hf_token>", "-ds", "single-head"], capsys, "is not cached"
    )
    assert "--setup embedded" in first
    second = bad_input(
        ["--hf-token", "<your_hf_token>", "-ds", "single-head", "--dataset", "flores200-sample"],
        capsys,
        "not in the local cache",
    )
    assert "--setup embedded" in second and "without --model-name" not in second
