"""The one exception type of ``boards/``: a board, clock or toolchain problem the user can act on.

Its message is one line. The CLI prints it as ``error: ...`` with exit status 2, like the compiler's own
:class:`compiler.errors.UserError`; ``boards/`` imports nothing of the compiler."""


class BoardError(Exception):
    """A board name, clock, bitstream or tool that cannot serve (the message says which and why)."""
