"""Errors that mean the user asked for something that cannot be done; the entry points print them as one line.

Every layer (nets, data, training, experiments) may raise them, so this module sits above none of them and
imports nothing of the project. Everything else is a bug and keeps its traceback.
"""
import os
import re


class UserError(Exception):
  """A problem the user can fix; the message says what it is and how to fix it."""


class WriteError(UserError):
  """A file could not be written: a full disk, a file-size limit, a directory that vanished or turned read-only."""


class ConfigError(UserError):
  """A config value is out of range, of the wrong type, or unknown."""


class WorkdirError(UserError):
  """The workdir cannot be used: unwritable, or it holds another experiment's results."""


class DataError(UserError):
  """A dataset is missing or does not match what was expected."""


class CheckpointError(UserError):
  """A checkpoint exists but cannot be trusted, or could not be written."""


class DistributedError(UserError):
  """The distributed flags are inconsistent, or the job's processes did not all start."""


class SweepError(UserError):
  """A sweep's flags or files are inconsistent."""


class TrainingDiverged(UserError):
  """The loss or the parameters stopped being finite."""


class Interrupted(UserError):
  """The user stopped the run (Ctrl-C) and what could be saved was saved; the message says how to go on."""

  exit_status = 130  # the shell's status for a process ended by SIGINT


def require(condition, message):
  """The one way every layer checks a config value: a ConfigError with `message` (what is wrong, and what to pass
  instead) unless `condition` holds."""
  if not condition:
    raise ConfigError(message)


def os_error(error):
  """The file system's message in an exception's chain (e.g. 'No space left on device: PATH'), else None."""
  seen, e = set(), error
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.strerror:
      return e.strerror + (f': {e.filename}' if e.filename else '')
    e = e.__cause__ or e.__context__
  code = re.search(r"\[os_error_code='(\d+)'\]", str(error))  # tensorstore's form of an OSError
  if code:
    return f'{os.strerror(int(code.group(1)))} ({type(error).__name__} from tensorstore)'
  return None


def one_line(error):
  """An exception from a library or the file system as one short line: the message of the first OSError in its
  chain (e.g. 'No space left on device: PATH'), else its type and first line. The text of TensorFlow's and
  tensorstore's messages is read here because no check before the call can say the same: a disk that fills, or
  a file that fails to read, during the write or read itself."""
  disk = os_error(error)
  if disk:
    return disk
  first = re.sub(r'\{\{[^}]*\}\}\s*', '', (str(error).strip().splitlines() or [''])[0])[:200]  # TF's op prefix
  return f'{type(error).__name__}: {first}' if first else type(error).__name__
