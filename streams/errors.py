"""Errors of the runtimes; each says what is wrong and what to do."""


class BudgetwatchError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class StoreError(BudgetwatchError):
    """The SQLite store cannot be used as asked."""


class ClockError(BudgetwatchError):
    """A run was asked to go back in business time."""
