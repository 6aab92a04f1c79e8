"""The one exception type the CLI turns into a one-line message (no traceback)."""

from __future__ import annotations


class MedusaError(Exception):
    """A problem the user can fix; the message says what to do."""
