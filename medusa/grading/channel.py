"""JSON lines between the grader and the submission's process: the only thing that crosses is plain
data.

The grader reads with a deadline (``selectors``: poll or epoll, so any descriptor number works), so
a submission that never answers costs at most its timeout, and a reply is capped in size, so one
that floods the pipe cannot exhaust the grader's memory.
"""

from __future__ import annotations

import json
import os
import selectors
import time

# bytes: far more than the ids of any output, far less than a grader's memory
MAX_MESSAGE = 16 << 20


class ChannelClosed(Exception):
    """The other side is gone (its process ended, or closed its end)."""


class ChannelTimeout(Exception):
    """No complete message before the deadline."""


class ChannelError(Exception):
    """A message that is not one JSON object, or one too large."""


class Channel:
    """The grader's end: ``send`` a dict, ``receive`` a dict within a deadline."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(read_fd, selectors.EVENT_READ)

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.write_fd, data):]
        except (BrokenPipeError, OSError) as exc:
            raise ChannelClosed(str(exc)) from None

    def receive(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_MESSAGE:
                raise ChannelError(f"a reply longer than {MAX_MESSAGE >> 20} MB")
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._selector.select(wait):
                raise ChannelTimeout()
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise ChannelClosed("end of file")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise ChannelError("a reply that is not JSON") from None
        if not isinstance(message, dict):
            raise ChannelError("a reply that is not a JSON object")
        return message

    def close(self) -> None:
        self._selector.close()
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
