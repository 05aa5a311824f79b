"""The one exception type that the CLI turns into ``error: ...`` and exit status 2."""


class UserError(Exception):
    """A problem with the user's input (file, flag, configuration, array), not a bug.

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """
