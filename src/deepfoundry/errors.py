"""The project's one exception type for bad user input.

The command line turns a :class:`DeepfoundryError` into a single ``error: ...`` line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations


class DeepfoundryError(Exception):
    """A user-facing error: the message says what was received, what was expected, how to fix it."""


def printable(message: str) -> str:
    """``message`` on one line: line breaks and other control characters (which can come from the user's own
    input, e.g. a config key ``'data.\\r'``) are shown as escapes.

    >>> printable("unknown config key 'data.\\r'")
    "unknown config key 'data.\\\\r'"
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
