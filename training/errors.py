"""Errors that mean the user asked for something that cannot be done; the entry points print them as one line.

Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem the user can fix; the message says what it is and how to fix it."""


class ConfigError(UserError):
  """A config value is out of range, of the wrong type, or unknown."""


class WorkdirError(UserError):
  """The workdir cannot be used: unwritable, or it holds another experiment's results."""


class DataError(UserError):
  """A dataset is missing or does not match what was expected."""
