"""User-facing errors and warnings: one line saying what, where and what to do."""
import sys


class UserError(Exception):
    """A problem with the user's input: printed as one line by the CLI, never as a stack trace."""


def warn(message: str) -> None:
    """A problem the run goes on past (a cell read as missing, look-alike class names): one line on stderr."""
    print(f"headstart: warning: {message}", file=sys.stderr, flush=True)
