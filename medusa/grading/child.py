"""The submission's own process: ``python -m medusa.grading.child IN_FD OUT_FD``, started by
:mod:`medusa.grading.isolation` with a scrubbed environment, a fresh working folder and home.

It imports the submission, loads its own copy of the model when the grader says so (after the
grader's load, so every file is cached), builds the generator and answers one request per example
over the pipe. Nothing the submission does here (hooks on the model, patched functions, its own
``atexit`` handlers) can reach the grader's model, clock, metrics or files: the grader only ever
reads token ids from this process.

Requests: ``load``, ``construct`` (the course's constructor arguments), ``call`` (a prompt's ids)
and ``where`` (answered at once, from a second thread, with the submission's file:line the main
thread is at: what a timed-out example is blamed on). Replies: ``imported``, ``loaded``, ``ready``,
``result``, ``where`` and ``fatal`` (a one-line error; before the first example it stops the grading
run, during one only its ``needs-cuda`` code does, since the submission's own code could send any
text).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
from pathlib import Path


def _writer(fd: int):
    lock = threading.Lock()

    def send(**message) -> None:
        data = (json.dumps(message) + "\n").encode()
        with lock:
            while data:
                data = data[os.write(fd, data):]

    return send


def _where(files: set[str]) -> str | None:
    """The submission's deepest frame on the main thread's stack right now."""
    from medusa.grading.submission import frame_site

    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None:
        return None
    frames = traceback.extract_stack(frame)
    inside = [f for f in frames if str(Path(f.filename).resolve()) in files]
    return frame_site(inside, files) if inside else None


def main(argv: list[str]) -> int:
    inbox = os.fdopen(int(argv[0]), "r", encoding="utf-8")
    send = _writer(int(argv[1]))
    config = json.loads(inbox.readline())
    import warnings

    warnings.filterwarnings("ignore")
    sys.path[:0] = config.get("sys_path", [])  # a module:Class submission's folder
    import torch

    from medusa.errors import MedusaError
    from medusa.grading.submission import NeedsCuda, Submission, load_generator_class, one_line

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    try:
        cls = load_generator_class(config["generator"])
    except MedusaError as exc:
        send(event="fatal", message=str(exc))
        return 0
    source = (
        sys.modules[cls.__module__].__dict__.get("__file__")
        if cls.__module__ in sys.modules
        else None
    )
    files = {str(Path(source).resolve())} if source else set()
    send(event="imported")

    requests: queue.Queue = queue.Queue()

    def read() -> None:
        for line in inbox:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("op") == "where":
                send(event="where", at=_where(files))
            else:
                requests.put(message)
        requests.put(None)  # the grader closed the pipe: end

    threading.Thread(target=read, daemon=True).start()
    model = submission = None
    while (message := requests.get()) is not None:
        op = message.get("op")
        try:
            if op == "load":
                from medusa.model.loader import LoadSettings, load_model

                model = load_model(LoadSettings(**config["load"]))
                send(event="loaded")
            elif op == "construct":
                submission = Submission(cls, model, **message["args"])
                send(event="ready")
            elif op == "call":
                send(event="result", **submission(message["prompt"]))
        # the grader words it itself: only the code and the site cross the pipe
        except NeedsCuda as exc:
            send(event="fatal", code="needs-cuda", at=exc.where, message=str(exc))
        except MedusaError as exc:
            send(event="fatal", message=str(exc))
        except Exception as exc:  # our own failure (e.g. loading): one line, the grader stops
            send(event="fatal", message=f"the submission's process failed ({op}): {one_line(exc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
