"""Errors that reach a user as one sentence, without a traceback.

Anything a user can fix (a config key, a missing dataset, a bad file) raises a ``UserError``; the
command-line wrapper prints its message and exits with status 2. Everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, stated as one sentence that names it and the fix."""


class ConfigError(UserError):
    """A config key that is unknown, mistyped or out of range."""


class DataError(UserError):
    """A dataset that is missing, truncated or not in the expected layout."""
