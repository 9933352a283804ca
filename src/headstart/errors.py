"""User-facing errors and warnings: one line saying what, where and what to do."""
import contextlib
import sys
import threading

_collected = threading.local()  # where warnings go instead of stderr, inside `collecting_warnings`


class UserError(Exception):
    """A problem with the user's input: printed as one line by the CLI, never as a stack trace."""


def warn(message: str) -> None:
    """A problem the run goes on past (a cell read as missing, look-alike class names): one line on stderr, or
    into the list of an enclosing `collecting_warnings`."""
    collected = getattr(_collected, "messages", None)
    if collected is not None:
        collected.append(message)
        return
    print(f"headstart: warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def collecting_warnings():
    """The warnings of the work inside, as a list instead of stderr lines: `serve` answers them to the client, who
    never sees the server's log (a cell of its row read as missing or clipped)."""
    previous = getattr(_collected, "messages", None)
    _collected.messages = messages = []
    try:
        yield messages
    finally:
        _collected.messages = previous
