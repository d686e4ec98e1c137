"""What the entry points share: parsing flags and configs, and turning user errors into one line.

`train.py` and `eval.py` stay thin: they define their flags, then call `main(run)`. A UserError anywhere below
becomes `error: <message>` on stderr and exit status 2, with no traceback; any other exception is a bug and keeps
its traceback.
"""
import sys

from absl import app
from absl import logging
from absl import flags
import ml_collections

from training.errors import ConfigError
from training.errors import UserError

EXIT_USER_ERROR = 2


def fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).replace('\n', ' '))
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config does not have
    inner = e.args[0] if e.args else e
    text = str(inner.args[0] if isinstance(inner, KeyError) and inner.args else inner)
    key, _, hint = text.partition('\n')
    overrides = ' '.join(a.split('=')[0] for a in argv[1:] if a.startswith('--config.'))
    fail(f'unknown config key {key} in {overrides or "the overrides"}' + (f' ({hint.strip()})' if hint else '')
         + '; print the valid keys with --show_config')


def config_from_flag(config_flag):
  """The resolved config behind a DEFINE_config_file flag; a config file that failed to load is a ConfigError."""
  value = config_flag.value
  if value is None:
    raise ConfigError('no --config given; pass --config=experiments/NAME.py[:ARGS] (see README.md)')
  if not isinstance(value, ml_collections.ConfigDict):
    error = object.__getattribute__(value, '_error')
    raise ConfigError(f'--config could not be loaded ({str(error).splitlines()[0]}); pass an existing file such '
                      'as --config=experiments/hidden_units.py')
  return value


def main(run):
  """Runs `run(argv)` under absl, with flag errors and UserErrors reported as one line."""

  def wrapped(argv):
    if not flags.FLAGS['verbosity'].present:  # keep JAX's start-up INFO lines (no TPU found, ...) out of the way
      logging.set_verbosity(logging.WARNING)
    try:
      run(argv)
    except UserError as e:
      fail(str(e))

  app.run(wrapped, flags_parser=_parse_flags)
