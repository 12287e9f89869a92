"""The one exception type that reaches the user as a single line (see cli.py)."""


class UserError(Exception):
    """Bad input the user can fix: a wrong key, a missing folder, a broken file.

    The message must say what is wrong and how to fix it, on one line. The CLI prints it
    and exits with status 2, without a traceback.
    """
