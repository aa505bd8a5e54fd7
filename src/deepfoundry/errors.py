"""The project's one exception type for bad user input.

The command line turns a :class:`DeepfoundryError` into a single ``error: ...`` line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations


class DeepfoundryError(Exception):
    """A user-facing error: the message says what was received, what was expected, how to fix it."""
