"""User-facing errors: one line saying what, where and what to do."""


class UserError(Exception):
    """A problem with the user's input: printed as one line by the CLI, never as a stack trace."""
