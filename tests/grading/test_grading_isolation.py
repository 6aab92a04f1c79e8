"""A hostile submission cannot forge its grade: it runs in its own process, with its own model,
environment and working folder, and only token ids come back. Each generator here tries one forgery
that worked when submissions ran inside the grader; each must fail to change the grade, the files,
ours or the grader's exit, and none may see the access token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from student_helpers import grade, report, rows

from medusa.grading.sandbox import check_supported
from medusa.errors import MedusaError

HONEST = '''
import torch


class Greedy:
    def __init__(self, model, decoding_strategy, eos_id, use_no_medusa_heads, beam_width,
                 max_output_len):
        self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len
        self.calls = 0

    def greedy(self, input_ids):
        out = []
        for _ in range(self.max_output_len):
            nxt = int(self.model(input_ids).logits[0, -1].argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            input_ids = torch.cat([input_ids, torch.tensor([[nxt]])], dim=1)
        return out

    def __call__(self, input_ids):
        self.calls += 1
        return torch.tensor(self.greedy(input_ids))
'''

HOSTILE = HONEST + '''

class HooksTheSharedHead(Greedy):
    """Every lm_head output says token 7: in the grader's process, ours would have said so too."""

    def __init__(self, *args):
        super().__init__(*args)

        def constant(module, inputs, output):
            out = torch.full_like(output, -1e4)
            out[..., 7] = 0.0
            return out

        self.model.lm_head.register_forward_hook(constant)


class ScalesTheWeights(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        with torch.no_grad():
            self.model.lm_head.weight.mul_(-1.0)


class StopsTheClock(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        import time
        time.perf_counter = lambda: 0.0
        time.monotonic = lambda: 0.0


class ForgesTheScores(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        import sacrebleu
        import medusa.evaluation.metrics as metrics

        metrics.compute_all = lambda *a, **k: {"bleu": 1.0, "rouge1": 1.0, "rouge2": 1.0,
                                               "rougeL": 1.0}
        sacrebleu.corpus_bleu = lambda *a, **k: None

    def __call__(self, input_ids):
        return torch.tensor([7, 7, 7])


class RewritesTheReportAtExit(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        import atexit
        import json

        def forge():
            with open(@OUT@ + "/grading.json", "w") as f:
                json.dump({"forged": True}, f)
            with open(@OUT@ + "/summary.json", "w") as f:
                json.dump({"forged": True}, f)

        atexit.register(forge)


class IgnoresTheAlarm(Greedy):
    def __call__(self, input_ids):
        import signal
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_REAL, 0)
        import os
        # the working folder outlives the process the grader kills
        if not os.path.exists("looped-once"):
            open("looped-once", "w").close()
            while True:
                pass
        return super().__call__(input_ids)


class ExitsItsProcess(Greedy):
    def __call__(self, input_ids):
        import os
        if not os.path.exists("exited-once"):
            open("exited-once", "w").close()
            os._exit(0)
        return super().__call__(input_ids)


class OutlivesTheGrader(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        import subprocess
        import sys
        code = ("import os, time\\n"
                "open(" + repr(@OUT@ + "/../daemon.pid") + ", 'w').write(str(os.getpid()))\\n"
                "while True:\\n    time.sleep(0.05)\\n")
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


class ForgesAFatalReply(Greedy):
    """Writes the grader's 'stop the run' message into the pipe itself, as if the grader's child
    code sent it."""

    def __call__(self, input_ids):
        import os
        import sys
        # the working folder outlives the process the grader kills
        if not os.path.exists("forged-once"):
            open("forged-once", "w").close()
            os.write(int(sys.argv[2]),
                     b'{"event": "fatal", "message": "grader error: the dataset is broken"}\\n')
            os._exit(0)
        return super().__call__(input_ids)


class DiesInItsConstructor(Greedy):
    def __init__(self, *args):
        import os
        import sys
        print("constructor: giving up", file=sys.stderr, flush=True)
        os._exit(3)


class WaitsForTheGrader(Greedy):
    """Says where it runs and what it saw of the grader's command line, then waits to be killed."""

    def __call__(self, input_ids):
        import os
        import time
        cmdline = open(f"/proc/{os.getppid()}/cmdline", "rb").read().decode("utf-8", "replace")
        with open(@OUT@ + "/../seen.tmp", "w") as f:
            f.write(f"{os.getpid()}\\n{'hf_cmdline_secret' in cmdline}\\n")
        os.replace(@OUT@ + "/../seen.tmp", @OUT@ + "/../seen")
        while True:
            time.sleep(0.05)


class MemoisesItsAnswers(Greedy):
    """Slow on a prompt it has not seen, instant on one it has: a warm-up on a timed prompt would
    time it at 0."""

    seen = {}

    def __call__(self, input_ids):
        import time
        key = tuple(input_ids[0].tolist())
        if key not in self.seen:
            time.sleep(1.0)
            self.seen[key] = super().__call__(input_ids)
        return self.seen[key]


class CutsThePredictions(Greedy):
    def __call__(self, input_ids):
        self.calls += 1
        if self.calls == 2:
            with open(@OUT@ + "/predictions.jsonl", "w"):
                pass
        return torch.tensor(self.greedy(input_ids))


class LooksForTheToken(Greedy):
    """Returns [5] where it found the secret (environment, arguments, its own or its parent's
    /proc), else [6]."""

    def __call__(self, input_ids):
        import os
        import sys
        secret = "hf_grader_secret_for_tests"
        seen = [" ".join(sys.argv), repr(dict(os.environ))]
        for path in ("/proc/self/cmdline", "/proc/self/environ", f"/proc/{os.getppid()}/cmdline",
                     f"/proc/{os.getppid()}/environ"):
            try:
                seen.append(open(path, "rb").read().decode("utf-8", "replace"))
            except OSError:
                pass
        for name in os.listdir(os.path.expanduser("~")):
            try:
                seen.append(open(os.path.join(os.path.expanduser("~"), name)).read())
            except OSError:
                pass
        return torch.tensor([5] if any(secret in text for text in seen) else [6])
'''


def hostile(out_dir: Path) -> str:
    return HOSTILE.replace("@OUT@", repr(str(out_dir)))


@pytest.fixture(scope="module")
def honest(student_heads_dir, tmp_path_factory):
    """The honest greedy generator's graded run: what ours and the metrics must stay."""
    import _pytest.capture  # noqa: F401  (capsys is function-scoped: grade through main directly)
    from medusa.cli import main

    out_dir = tmp_path_factory.mktemp("honest") / "run"
    path = out_dir.parent / "honest_submission.py"
    path.write_text(HONEST)
    assert (
        main(
            [
                "-m",
                str(student_heads_dir),
                "-n",
                "3",
                "-mol",
                "8",
                "--prompt-style",
                "seed",
                "--device",
                "cpu",
                "-o",
                str(out_dir),
                "--generator",
                f"{path}:Greedy",
            ]
        )
        == 0
    )
    return {
        "ours": [r["token_ids"] for r in rows(out_dir, "ours.jsonl")],
        "report": report(out_dir),
        "summary": json.loads((out_dir / "summary.json").read_text()),
    }


def graded(cls: str, student_heads_dir, tmp_path, capsys, *extra: str):
    out_dir = tmp_path / cls
    code, out, err = grade(hostile(out_dir), cls, student_heads_dir, out_dir, capsys, *extra)
    return code, out, err, out_dir


def own_scores(out_dir: Path) -> dict:
    """The submission's predictions scored here, by the test's own process."""
    from medusa.evaluation.metrics import compute_all

    graded_rows = rows(out_dir)
    return compute_all(
        [r["prediction"] for r in graded_rows],
        [r["reference"] for r in graded_rows],
        "eng_Latn",
        raw_references=[r["target"] for r in graded_rows],
    )


@pytest.mark.parametrize("cls", ["HooksTheSharedHead", "ScalesTheWeights"])
def test_changing_its_model_changes_neither_ours_nor_the_grade(
    cls, honest, student_heads_dir, tmp_path, capsys
):
    code, out, err, out_dir = graded(cls, student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    assert [r["token_ids"] for r in rows(out_dir, "ours.jsonl")] == honest["ours"]
    graded_rows = rows(out_dir)
    # the submission's own model did change
    assert [r["token_ids"] for r in graded_rows] != honest["ours"]
    assert report(out_dir)["reference"]["agreement"]["identical"] < 3


def test_stopping_its_clock_does_not_stop_the_graders(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("StopsTheClock", student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    assert all(r["seconds"] > 0 for r in rows(out_dir))
    t = report(out_dir)["reference"]["seconds_per_token"]
    assert t["submission"] > 0 and t["ratio"] > 0.05 and "0.00x ours" not in out


def test_replacing_the_scoring_does_not_change_the_scores(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("ForgesTheScores", student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    scores = own_scores(out_dir)
    for key in ("bleu", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf"):
        assert summary["metrics"][key] == pytest.approx(scores[key])
    assert summary["metrics"]["bleu"] < 1.0


def test_a_metric_library_beside_the_submission_is_not_the_graders(
    honest, student_heads_dir, tmp_path, capsys
):
    fake = tmp_path / "rouge_score"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "rouge_scorer.py").write_text(
        "class _S:\n    fmeasure = precision = recall = 1.0\n\nclass RougeScorer:\n    def"
        " __init__(self, *a, **k):\n        pass\n\n    def score(self, target, prediction):\n     "
        "   return {k: _S() for k in ('rouge1', 'rouge2', 'rougeL')}\n"
    )
    (fake / "scoring.py").write_text("class BootstrapAggregator:\n    pass\n")
    out_dir = tmp_path / "shadow"
    code, out, err = grade(HONEST, "Greedy", student_heads_dir, out_dir, capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "summary.json").read_text())["metrics"]
    assert (
        metrics["rouge1"] == pytest.approx(honest["summary"]["metrics"]["rouge1"])
        and metrics["rouge1"] < 1.0
    )


def test_an_atexit_handler_cannot_rewrite_the_report(honest, student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("RewritesTheReportAtExit", student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    time.sleep(0.5)  # a handler that did run would have written by now
    rep, summary = report(out_dir), json.loads((out_dir / "summary.json").read_text())
    assert "forged" not in rep and "forged" not in summary
    assert rep["reference"]["agreement"]["identical"] == 3


def test_ignoring_sigalrm_does_not_defeat_the_timeout(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded(
        "IgnoresTheAlarm", student_heads_dir, tmp_path, capsys, "--no-warmup", "--timeout", "2"
    )
    assert code == 1, err
    graded_rows = rows(out_dir)
    assert graded_rows[0]["error"] == "ran longer than the --timeout of 2 s"
    assert graded_rows[0]["error_at"].startswith("IgnoresTheAlarm_submission.py:")
    assert [r["error"] for r in graded_rows[1:]] == [None, None]
    assert report(out_dir)["completed"] == 2


def test_ending_its_process_fails_one_example_not_the_grader(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded(
        "ExitsItsProcess", student_heads_dir, tmp_path, capsys, "--no-warmup"
    )
    assert code == 1 and "exit status 1: the submission failed 1 example" in err, err
    graded_rows = rows(out_dir)
    assert (
        graded_rows[0]["error"]
        == "the submission's process exited with code 0 while running the submission"
    )
    assert [r["error"] for r in graded_rows[1:]] == [None, None]
    assert report(out_dir)["completed"] == 2 and (out_dir / "summary.json").is_file()


def test_no_process_of_the_submission_outlives_the_grader(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("OutlivesTheGrader", student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    pid_file = tmp_path / "daemon.pid"
    assert pid_file.is_file(), "the daemon never started"
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_forged_stop_message_fails_one_example_not_the_run(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded(
        "ForgesAFatalReply", student_heads_dir, tmp_path, capsys, "--no-warmup"
    )
    assert code == 1, err
    graded_rows = rows(out_dir)
    assert graded_rows[0]["error"].startswith("the submission's process failed: grader error")
    assert [r["error"] for r in graded_rows[1:]] == [None, None] and report(out_dir)[
        "completed"
    ] == 2
    assert not any(line.startswith("error:") for line in err.splitlines())


def test_a_submission_dying_in_its_constructor_is_one_line(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("DiesInItsConstructor", student_heads_dir, tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    assert ("error: --generator: the submission's process exited with code 3 while constructing "
            "DiesInItsConstructor; its last output: constructor: giving up") in err


DIES_ON_IMPORT = """
import os, sys
print("cannot find my weights", file=sys.stderr, flush=True)
os._exit(4)
"""
SLOW_IMPORT = """
import time
time.sleep(60)
"""


def test_a_submission_dying_or_hanging_on_import_is_one_line(
    student_heads_dir, tmp_path, capsys, monkeypatch
):
    import medusa.grading.isolation as isolation

    code, out, err = grade(DIES_ON_IMPORT, "Anything", student_heads_dir, tmp_path / "dies", capsys)
    assert code == 2 and "Traceback" not in err
    assert (
        "error: --generator: the submission's process exited with code 4 while importing the"
        " submission; its last output: cannot find my weights"
        in err
    )
    monkeypatch.setattr(isolation, "IMPORT_SECONDS", 3.0)
    started = time.monotonic()
    code, out, err = grade(SLOW_IMPORT, "Anything", student_heads_dir, tmp_path / "slow", capsys)
    assert (
        code == 2
        and "error: --generator: importing the submission failed: ran longer than 3 s" in err
    )
    assert time.monotonic() - started < 45


def alive(pid: int) -> bool:
    """Running (a killed process left unreaped by this container's init reads as a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def grader_process(student_heads_dir, tmp_path) -> tuple[subprocess.Popen, Path]:
    """The real command line, in a process of its own, grading a submission that waits to be killed.
    """
    out_dir = tmp_path / "WaitsForTheGrader"
    out_dir.mkdir()
    path = tmp_path / "waits_submission.py"
    path.write_text(hostile(out_dir))
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    env.pop("HF_TOKEN", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "medusa.py"),
            "-m",
            str(student_heads_dir),
            "-n",
            "2",
            "-mol",
            "8",
            "--prompt-style",
            "seed",
            "--device",
            "cpu",
            "-o",
            str(out_dir),
            "--no-warmup",
            "--setup",
            "embedded",
            "--hf-token",
            "hf_cmdline_secret",
            "--generator",
            f"{path}:WaitsForTheGrader",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = tmp_path / "seen"
    deadline = time.monotonic() + 240
    while not seen.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not seen.exists():
        proc.kill()
        pytest.fail(f"the submission never ran: {proc.communicate()[1][-2000:]}")
    return proc, seen


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's"
)
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_submission_dies_with_its_grader(how, student_heads_dir, tmp_path):
    """However the grader ends, its submission's process ends too; and the grader's command line no
    longer shows the --hf-token it was given."""
    import signal

    proc, seen = grader_process(student_heads_dir, tmp_path)
    pid, token_seen = seen.read_text().split()
    assert token_seen == "False"
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    if how == "SIGTERM":
        assert (
            proc.returncode == 143 and "stopped by signal 15: finished examples are saved" in err
        ), err
    deadline = time.monotonic() + 20
    while alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(int(pid))


def test_the_warm_up_prompt_is_never_a_timed_one(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded("MemoisesItsAnswers", student_heads_dir, tmp_path, capsys)
    assert code == 0, err
    assert all(r["seconds"] >= 1.0 for r in rows(out_dir))


def test_cutting_the_predictions_loses_no_row(student_heads_dir, tmp_path, capsys):
    code, out, err, out_dir = graded(
        "CutsThePredictions", student_heads_dir, tmp_path, capsys, "--no-warmup"
    )
    assert code == 0, err
    assert [r["index"] for r in rows(out_dir)] == [0, 1, 2]
    assert "was changed or removed during the run; written again with its 3 rows" in err
    assert report(out_dir)["completed"] == 3


def test_the_submission_sees_no_token(student_heads_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_grader_secret_for_tests")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_grader_secret_for_tests")
    code, out, err, out_dir = graded(
        "LooksForTheToken",
        student_heads_dir,
        tmp_path,
        capsys,
        "--setup",
        "embedded",
        "--hf-token",
        "hf_grader_secret_for_tests",
    )
    assert code == 0, err
    # [5] would mean it found the secret
    assert [r["token_ids"] for r in rows(out_dir)] == [[6]] * 3
    assert "hf_grader_secret_for_tests" not in out + err


def test_the_child_environment_keeps_no_secret(monkeypatch, tmp_path):
    from medusa.grading.isolation import child_environment

    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
        "HF_TOKEN_PATH",
    ):
        monkeypatch.setenv(name, "secret-value")
    env = child_environment(tmp_path / "home", tmp_path / "tmp")
    assert "secret-value" not in json.dumps(env)
    assert env["HF_HUB_OFFLINE"] == "1" and env["HOME"] == str(tmp_path / "home")
    assert "PATH" in env and "PYTHONPATH" in env


# ---- --sandbox -----------------------------------------------------------------------------------
def sandbox_works() -> bool:
    try:
        check_supported()
    except (MedusaError, OSError, subprocess.SubprocessError):
        return False
    return True


sandboxed = pytest.mark.skipif(
    not sandbox_works(), reason="this machine refuses user namespaces (--sandbox)"
)

PEEKING = HONEST + '''

def readable(path):
    try:
        with open(path) as f:
            return bool(f.read())
    except OSError:
        return False


class Peeks(Greedy):
    """One id per question, 5 = yes / 6 = no: can it read the references, the grader's /proc, the
    network?"""

    def __call__(self, input_ids):
        import os
        import socket
        import medusa
        answers = []
        samples = os.path.join(os.path.dirname(medusa.__file__), "samples",
                               "flores200-devtest.eng_Latn")
        answers.append(5 if os.path.exists(samples) else 6)
        answers.append(5 if readable(@DATA@) else 6)
        # the grader's files there
        answers.append(5 if os.path.isdir(@OUT@) and os.listdir(@OUT@) else 6)
        try:
            open(f"/proc/{os.getppid()}/environ", "rb").read()
            answers.append(5 if os.getppid() > 1 else 6)
        except OSError:
            answers.append(6)
        try:
            socket.create_connection(("127.0.0.1", @PORT@), timeout=2).close()
            answers.append(5)
        except OSError:
            answers.append(6)
        return torch.tensor(answers)
'''


def peek(student_heads_dir, tmp_path, capsys, *extra):
    data = tmp_path  # beside the submission: its folder stays visible, the data's files do not
    (data / "set.hin_Deva").write_text("मैं घर जा रहा हूँ\nवह किताब पढ़ती है\n")
    (data / "set.eng_Latn").write_text("I am going home\nShe reads a book\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    out_dir = tmp_path / "peek"
    source = (
        PEEKING.replace("@DATA@", repr(str(data / "set.eng_Latn")))
        .replace("@OUT@", repr(str(out_dir)))
        .replace("@PORT@", str(listener.getsockname()[1]))
    )
    try:
        code, out, err = grade(
            source,
            "Peeks",
            student_heads_dir,
            out_dir,
            capsys,
            "-d",
            str(data / "set"),
            "--no-warmup",
            *extra,
            n=1,
        )
    finally:
        listener.close()
    assert code == 0, err
    return rows(out_dir)[0]["checks"], report(out_dir), rows(out_dir)


@sandboxed
def test_the_sandbox_hides_references_results_proc_and_network(student_heads_dir, tmp_path, capsys):
    checks, rep, graded_rows = peek(student_heads_dir, tmp_path, capsys, "--sandbox")
    assert rep["sandbox"] and graded_rows[0]["error"] is None
    assert graded_rows[0]["token_ids"] == [6, 6, 6, 6, 6], graded_rows[0]


def test_without_the_sandbox_the_same_files_are_in_reach(student_heads_dir, tmp_path, capsys):
    """What --sandbox adds, shown by its absence (docs/grading.md lists both columns)."""
    checks, rep, graded_rows = peek(student_heads_dir, tmp_path, capsys)
    assert graded_rows[0]["token_ids"][:3] == [5, 5, 5] and graded_rows[0]["token_ids"][4] == 5


ESCAPING = HONEST + '''

NESTED = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# a user namespace of its own, and a mount namespace in it
if libc.unshare(0x10000000 | 0x00020000) != 0:
    sys.exit(0)
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/uid_map", "w").write("0 0 1")
libc.umount2(sys.argv[1].encode(), 2)
sys.exit(5 if os.path.exists(sys.argv[2]) else 0)
"""


class Escapes(Greedy):
    """One id per attempt to undo the sandbox, 5 = it worked / 6 = it did not."""

    def __call__(self, input_ids):
        import ctypes
        import os
        import subprocess
        import sys
        import medusa
        libc = ctypes.CDLL(None, use_errno=True)
        samples = os.path.join(os.path.dirname(medusa.__file__), "samples")
        reference = os.path.join(samples, "flores200-devtest.eng_Latn")
        answers = []
        with open("/proc/self/status") as f:
            caps = [line.split()[1] for line in f if line.startswith("CapEff")][0]
        answers.append(5 if int(caps, 16) else 6)
        libc.umount2(samples.encode(), 2)  # take the mask off the references
        answers.append(5 if os.path.exists(reference) else 6)
        libc.mount(None, os.path.dirname(medusa.__file__).encode(), None,
                   ctypes.c_ulong(32 | 4096), None)
        try:  # write into the grader's package
            open(os.path.join(os.path.dirname(medusa.__file__), "planted.py"), "w").close()
            answers.append(5)
        except OSError:
            answers.append(6)
        try:  # the chroot escape: a new root below the working folder, then up past it
            os.makedirs("jail", exist_ok=True)
            os.chroot("jail")
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            with open(@DATA@) as f:
                answers.append(5 if f.read() else 6)
        except OSError:
            answers.append(6)
        nested = subprocess.run([sys.executable, "-c", NESTED, samples, reference])
        answers.append(5 if nested.returncode == 5 else 6)
        plain = {"null", "zero", "full", "random", "urandom", "shm", "fd", "stdin", "stdout",
                 "stderr"}
        gpus = {d for d in os.listdir("/dev") if d.startswith("nvidia")}
        answers.append(5 if set(os.listdir("/dev")) - plain - gpus else 6)
        return torch.tensor(answers)
'''


@sandboxed
def test_the_sandboxed_submission_cannot_undo_the_sandbox(student_heads_dir, tmp_path, capsys):
    """Uid 0 of its namespace, but without capabilities: no unmounting the masks, no remounting
    read-write, no chroot back to the grader's tree, not even from a user namespace of its own; and
    no disks in /dev."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "set.hin_Deva").write_text("मैं घर जा रहा हूँ\n")
    (data / "set.eng_Latn").write_text("I am going home\n")
    out_dir = tmp_path / "escape"
    source = ESCAPING.replace("@DATA@", repr(str(data / "set.eng_Latn")))
    code, out, err = grade(
        source,
        "Escapes",
        student_heads_dir,
        out_dir,
        capsys,
        "-d",
        str(data / "set"),
        "--no-warmup",
        "--sandbox",
        n=1,
    )
    assert code == 0, err
    graded_rows = rows(out_dir)
    assert graded_rows[0]["error"] is None, graded_rows[0]
    assert graded_rows[0]["token_ids"] == [6] * 6, graded_rows[0]
    import medusa

    assert not (Path(medusa.__file__).parent / "planted.py").exists()


@sandboxed
def test_a_sandboxed_submission_grades_like_an_unsandboxed_one(
    honest, student_heads_dir, tmp_path, capsys
):
    out_dir = tmp_path / "sandboxed"
    code, out, err = grade(HONEST, "Greedy", student_heads_dir, out_dir, capsys, "--sandbox")
    assert code == 0, err
    assert [r["token_ids"] for r in rows(out_dir)] == honest["ours"]
    assert report(out_dir)["reference"]["agreement"]["identical"] == 3 and "sandboxed" in out


def test_sandbox_needs_a_generator(student_heads_dir, tmp_path, capsys):
    from medusa.cli import main

    code = main(["-m", str(student_heads_dir), "-o", str(tmp_path / "x"), "--sandbox"])
    err = capsys.readouterr().err
    assert code == 2 and "add --generator" in err and len(err.strip().splitlines()) == 1
