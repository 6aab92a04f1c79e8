"""The submission's process, seen from the grader: started, timed, killed and cleaned up from
outside.

A submission runs in a child process (:mod:`medusa.grading.child`) with its own model load, in a
fresh temporary working folder and home, with an environment that keeps only what Python, torch and
CUDA need (no access token, no ``HF_*`` secrets, no grader arguments) and with the hub switched to
offline mode. Only JSON lines of token ids cross the pipe (:mod:`medusa.grading.channel`). The
grader:

- waits for each reply with a deadline (``--timeout`` per example; fixed, generous ones for the
import, the model
  load and the constructor), then kills the child's whole process group and starts a new child for
  the next example, so no signal handler or loop inside the submission can hold it;
- treats a child that ends or sends garbage as that example's failure and goes on with a new child
(before the
  first example, a child that ends stops the run with one line, its last line of output included);
- is the only writer of every output file (the child's output goes to ``submission.log`` through the
grader);
- freezes the child (SIGSTOP) while it decodes its own passes and writes its files, and kills it at
the end of the
  run; on Linux it becomes a subreaper and, at each freeze and kill, kills every process the
  submission started that left the child's process group, so nothing of the submission runs while
  the grader writes; and marks itself non-dumpable while a submission runs, so that (for a grader
  that is not root) the submission cannot read the grader's environment or memory through ``/proc``;
- has the child killed by the kernel if the grader itself dies (``PR_SET_PDEATHSIG``; with
``--sandbox`` that ends
  every process of the submission's namespace).

``--sandbox`` (:mod:`medusa.grading.sandbox`) also hides the network and every file but the
submission's folder, the Python installation and the model's files.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from medusa.console import say
from medusa.errors import MedusaError
from medusa.grading.channel import Channel, ChannelClosed, ChannelError, ChannelTimeout

WHERE_SECONDS = 1.0  # how long a timed-out child may take to say where it was
IMPORT_SECONDS = 600.0  # starting Python, importing torch and the submission
LOAD_SECONDS = 3600.0  # the child's own model load, from the files the grader's load cached
CONSTRUCT_SECONDS = 600.0  # the submission's constructor, where --timeout is not set
TAIL_CHARS = 300  # of the child's last output line, quoted when it ends before the first example
LOG_LIMIT = 10 << 20  # bytes of the submission's own output kept in submission.log
LOG = "submission.log"
# environment variables the child keeps (values, not secrets: the rest, tokens included, are
# dropped)
KEEP = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",
    "MEDUSA_EMBEDDED_GGUF",
)
KEEP_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "PYTORCH_")
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36


class SubmissionGone(Exception):
    """The child ended, or broke the protocol; the message says how."""


class SubmissionTimedOut(Exception):
    def __init__(self, seconds: float, where: str | None) -> None:
        super().__init__(f"ran longer than the --timeout of {seconds:g} s")
        self.where = where


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _die_with_parent():
    """For the child, between fork and exec: the kernel kills it when the grader ends, however the
    grader ends (the function is looked up before the fork, so the child calls no loader)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid → (parent pid, process group, session) of every process this user can see (Linux
    ``/proc``)."""
    table = {}
    if not os.path.isdir("/proc"):
        return table
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def stray_processes(child: int | None = None, frozen_group: int | None = None) -> list[int]:
    """What a submission started that is not frozen with its process group: the descendants of
    ``child`` outside ``frozen_group``, and our own direct children outside our session (a
    submission's processes reparented to us, a subreaper, after their parent died; the grader's own
    helpers share its session)."""
    table = _process_table()
    me, session = os.getpid(), os.getsid(0)
    found = {
        pid
        for pid, (ppid, _, sid) in table.items()
        if ppid == me and sid != session and pid != child
    }
    if child is not None:
        below, frontier = set(), {child}
        while frontier:
            frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - below
            below |= frontier
        found |= {pid for pid in below if table[pid][1] != frozen_group}
    return sorted(found)


def kill_strays(
    child: int | None = None, frozen_group: int | None = None, rounds: int = 50
) -> None:
    """Kill (and reap) :func:`stray_processes`; repeated, since a dying process may leave orphans of
    its own."""
    for _ in range(rounds):
        pids = stray_processes(child, frozen_group)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass
        time.sleep(0.01)
    for pid in stray_processes(child, frozen_group):  # reap what died meanwhile
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass


def scrub_command_line(secret: str) -> bool:
    """Overwrite ``secret`` (an ``--hf-token``) in this process's own command line, which any
    process of the same user reads from ``/proc/PID/cmdline``; ``sys.argv`` (a copy) keeps it. False
    where that cannot be done."""
    if not secret or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # arg_start, arg_end: fields 48 and 49 of stat
        start, end = int(fields[45]), int(fields[46])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            text = mem.read(end - start)
            if secret.encode() not in text:
                return secret not in open("/proc/self/cmdline", "rb").read().decode(
                    "utf-8", "replace"
                )
            mem.seek(start)
            mem.write(text.replace(secret.encode(), b"*" * len(secret.encode())))
        return True
    except (OSError, IndexError, ValueError):
        return False


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def child_environment(home: Path, tmp: Path) -> dict[str, str]:
    """The child's whole environment: what runs Python, torch and CUDA, the caches the model loads
    from, offline."""
    import medusa
    from medusa.model.embedded import cache_root

    env = {k: v for k, v in os.environ.items() if k in KEEP or k.startswith(KEEP_PREFIXES)}
    env.update(
        {
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "HF_HOME": str(home / "hf"),
            "HF_HUB_CACHE": hub_cache(),
            "MEDUSA_CACHE": str(cache_root()),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(
                [
                    str(Path(medusa.__file__).resolve().parents[1]),
                    *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                ]
            ),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class ChildConfig:
    """What the child needs: the submission, how to load the model (no token), threads, seed;
    ``sandbox``: the files to share with it (None: no sandbox)."""

    generator: str
    load: dict
    threads: int
    seed: int
    sys_path: list[str] = field(default_factory=list)
    sandbox: object | None = None  # medusa.grading.sandbox.SandboxSpec


class SubmissionProcess:
    """One submission's child process, restartable; every wait on it has a deadline."""

    def __init__(self, config: ChildConfig, debug: bool = False) -> None:
        self.config, self.debug = config, debug
        self.folder = Path(tempfile.mkdtemp(prefix="medusa-grading-"))
        self.proc: subprocess.Popen | None = None
        self.channel: Channel | None = None
        self.log_path: Path | None = None  # where the child's output goes (set per grading pass)
        self._pending: list[bytes] = []  # output before a log path is set
        self._logged = 0
        self._log_lock = threading.Lock()
        self._drain: threading.Thread | None = None
        self.construct_args: dict | None = None
        self.loaded = False
        self.paused = False

    # ---- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child and wait until it imported the submission (its errors are one line, exit
        2)."""
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the submission become ours, to be killed
        # our /proc entries (environment, memory) closed to the submission
        _prctl(PR_SET_DUMPABLE, 0)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        log_r, log_w = os.pipe()
        home, work, tmp = self.folder / "home", self.folder / "work", self.folder / "tmp"
        for d in (home, work, tmp):
            d.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "medusa.grading.child", str(to_child_r), str(from_child_w)]
        env = child_environment(home, tmp)
        if self.config.sandbox is not None:
            from medusa.grading.sandbox import sandboxed

            command, env, work = sandboxed(
                self.config.sandbox, command, env, self.folder, (to_child_r, from_child_w)
            )
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_w,
                stderr=subprocess.STDOUT,
                pass_fds=(to_child_r, from_child_w),
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise MedusaError(
                f"--generator: cannot start the submission's process ({exc})"
            ) from None
        finally:
            for fd in (to_child_r, from_child_w, log_w):
                os.close(fd)
        self.channel = Channel(from_child_r, to_child_w)
        self._drain = threading.Thread(target=self._drain_output, args=(log_r,), daemon=True)
        self._drain.start()
        first = {
            "generator": self.config.generator,
            "load": self.config.load,
            "threads": self.config.threads,
            "seed": self.config.seed,
            "sys_path": self.config.sys_path,
        }
        self._setup(first, "imported", IMPORT_SECONDS, "importing the submission")

    def load(self) -> None:
        """The child's own model load (after the grader's: every file is in the cache by then)."""
        self._setup({"op": "load"}, "loaded", LOAD_SECONDS, "loading the model")

    def construct(self, args: dict, timeout: float | None, class_name: str) -> None:
        """Build the generator (within ``timeout``); failures stop the run with one line."""
        self.construct_args = args
        self._setup({"op": "construct", "args": args}, "ready", timeout or CONSTRUCT_SECONDS,
                    f"constructing {class_name}", "the --timeout of " if timeout else "")

    def _setup(
        self, message: dict, event: str, timeout: float, doing: str, limit: str = ""
    ) -> None:
        """One step before the examples; no example can go on without it, so its failure stops the
        run."""
        try:
            self._send(message, doing)
            self._expect(event, timeout, doing)
        except SubmissionTimedOut as exc:
            at = f" ({exc.where})" if exc.where else ""
            raise MedusaError(
                f"--generator: {doing} failed: ran longer than {limit}{timeout:g} s{at}"
            ) from None
        except SubmissionGone as exc:
            self.stop()
            raise MedusaError(f"--generator: {exc}{self._last_output()}") from None

    def ready(self, args: dict, timeout: float | None, class_name: str) -> None:
        """Started, loaded and constructed with ``args`` (a restart after a failure goes through
        here)."""
        if self.proc is None:
            self.start()
        self._resume()
        if not self.loaded:
            self.load()
            self.loaded = True
        if self.construct_args != args:
            self.construct(args, timeout, class_name)

    # ---- one example -----------------------------------------------------------------------------
    def call(self, prompt_ids: list[int], timeout: float | None) -> dict:
        """The child's reply for one prompt; SubmissionTimedOut / SubmissionGone when there is none
        (the child is stopped then: the next call needs :meth:`ready` again)."""
        try:
            self._send({"op": "call", "prompt": prompt_ids}, "running the submission")
            return self._expect("result", timeout, "running the submission")
        except (SubmissionGone, SubmissionTimedOut):
            self.stop()
            raise

    # ---- waiting ---------------------------------------------------------------------------------
    def _send(self, message: dict, doing: str) -> None:
        try:
            self.channel.send(message)
        except ChannelClosed:
            raise SubmissionGone(self._ended(doing)) from None

    def _expect(self, event: str, timeout: float | None, doing: str) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = self.channel.receive(left)
            except ChannelTimeout:
                where = self._where()
                self.stop()
                raise SubmissionTimedOut(timeout, where) from None
            except ChannelClosed:
                reason = self._ended(doing)
                self.stop()
                raise SubmissionGone(reason) from None
            except ChannelError as exc:
                self.stop()
                raise SubmissionGone(
                    f"the submission's process broke the grading protocol ({exc})"
                ) from None
            if message.get("event") == "fatal":
                self.stop()
                self._fatal(message, event)
            if message.get("event") == event:
                return message

    @staticmethod
    def _fatal(message: dict, event: str) -> None:
        """A ``fatal`` reply. During an example the submission's own code could have sent it, so
        only the needs-CUDA code stops the run there, in the grader's own words; any other fails
        that example."""
        text = " ".join(str(message.get("message", "the submission's process failed")).split())[
            :1000
        ]
        if event == "result":
            if message.get("code") == "needs-cuda":
                from medusa.grading.submission import cuda_error

                at = message.get("at")
                raise cuda_error(at[:200] if isinstance(at, str) else None)
            raise SubmissionGone(f"the submission's process failed: {text[:300]}")
        raise MedusaError(text if text.startswith("--generator: ") else f"--generator: {text}")

    def _last_output(self) -> str:
        """The child's last line of output (a traceback's last line says why it died), for the
        one-line error."""
        with self._log_lock:
            data = b"".join(self._pending)
            if not data and self.log_path is not None:
                try:
                    with open(self.log_path, "rb") as f:
                        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                        data = f.read()
                except OSError:
                    data = b""
        lines = [
            line.strip()
            for line in data[-4096:].decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
        if not lines:
            return ""
        line = lines[-1] if len(lines[-1]) <= TAIL_CHARS else lines[-1][:TAIL_CHARS - 3] + "..."
        return f"; its last output: {line}"

    def _where(self) -> str | None:
        """Ask a timed-out child where it is; a child that does not answer at once is not waited
        for."""
        try:
            self.channel.send({"op": "where"})
            deadline = time.monotonic() + WHERE_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                message = self.channel.receive(left)
                if message.get("event") == "where":
                    at = message.get("at")
                    return at[:200] if isinstance(at, str) else None
        except (ChannelClosed, ChannelTimeout, ChannelError):
            pass
        return None

    def _ended(self, doing: str) -> str:
        """How the child ended, in words (waiting briefly for its exit status)."""
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is None:
            how = "stopped answering"
        elif code < 0:
            how = (
                f"was killed by {signal.Signals(-code).name}"
                if -code in signal.valid_signals()
                else f"was killed by signal {-code}"
            )
        else:
            how = f"exited with code {code}"
        return f"the submission's process {how} while {doing}"

    # ---- pausing and stopping --------------------------------------------------------------------
    def pause(self) -> None:
        """Freeze the child's process group (SIGSTOP) and kill whatever left it, while the grader
        decodes its own passes and writes its files; :meth:`ready` thaws it (the next table row
        keeps its model load)."""
        if self.proc is None or self.paused:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGSTOP)
        except OSError:
            pass
        kill_strays(self.proc.pid, frozen_group=self.proc.pid)
        self.paused = True

    def _resume(self) -> None:
        if self.proc is not None and self.paused:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
        self.paused = False

    def stop(self) -> None:
        """Kill the child's process group and everything the submission started; idempotent."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        # its descendants first (they are not reparented while it lives), then orphans
        kill_strays(self.proc.pid)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_strays()
        self.channel.close()
        if self._drain is not None:
            self._drain.join(timeout=5)
        self.proc = self.channel = self._drain = None
        self.construct_args, self.loaded, self.paused = None, False, False

    def close(self) -> None:
        self.stop()
        _prctl(PR_SET_DUMPABLE, 1)
        _prctl(PR_SET_CHILD_SUBREAPER, 0)
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- the child's output ----------------------------------------------------------------------
    def set_log(self, path: Path) -> None:
        """Where the child's output goes from now on (what came before is written there first)."""
        with self._log_lock:
            if path != self.log_path:  # each run's log has its own size limit
                self._logged = 0
            self.log_path = path
            pending, self._pending = self._pending, []
        for chunk in pending:
            self._write_log(chunk)

    def _drain_output(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                self._write_log(chunk)

    def _write_log(self, chunk: bytes) -> None:
        with self._log_lock:
            if self.debug:
                for line in chunk.decode("utf-8", "replace").splitlines():
                    say(f"submission| {line}")
            if self.log_path is None:
                if sum(map(len, self._pending)) < LOG_LIMIT:
                    self._pending.append(chunk)
                return
            if self._logged >= LOG_LIMIT:
                return
            chunk = chunk[: LOG_LIMIT - self._logged]
            try:
                with open(self.log_path, "ab") as f:
                    f.write(chunk)
                    if self._logged + len(chunk) >= LOG_LIMIT:
                        f.write(b"\n[submission output cut here: more than 10 MB]\n")
            except OSError:
                return
            self._logged += len(chunk)
