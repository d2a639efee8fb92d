"""The one exception family a user can fix: stage scripts print its message as one line and exit 2."""


class UserError(Exception):
    """Bad input: a param, a file, a name. The message says what is wrong and how to fix it."""


class ParamError(UserError, ValueError):
    """A parameter value that is not allowed."""
