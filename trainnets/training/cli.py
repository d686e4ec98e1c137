"""What the entry points share: parsing flags and configs, and turning user errors into one line.

`train.py` and `eval.py` stay thin: they define their flags, then call `main(run)`. A UserError anywhere below
becomes `error: <message>` on stderr and exit status 2, with no traceback; any other exception is a bug and keeps
its traceback.
"""
import difflib
import importlib.util
import math
import os
import shutil
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from trainnets import config_keys
from trainnets import errors
from trainnets.errors import ConfigError
from trainnets.errors import Interrupted
from trainnets.errors import UserError
from trainnets.training import process
from trainnets.training import workdir

EXIT_USER_ERROR = 2


def fail(message, status=EXIT_USER_ERROR, prefix='error: '):
  """Prints `message` as the last line on stderr and ends the process with `status`. It leaves with os._exit,
  after flushing: the libraries' threads (orbax's, tensorstore's) would otherwise print tracebacks about their
  closed event loops at interpreter exit, and a multi-process job would wait at JAX's shutdown barrier for
  processes that may never reach it. The trainers finish their checkpoint writes before raising. What os._exit
  skips and would leave behind is removed first: multiprocessing's temporary directory (the figure workers'
  forkserver keeps its socket there)."""
  sys.stdout.flush()
  print(f'{prefix}{message}', file=sys.stderr, flush=True)
  if 'multiprocessing.util' in sys.modules:
    shutil.rmtree(sys.modules['multiprocessing.util'].get_temp_dir(), ignore_errors=True)
  os._exit(status)


def _config_spec(argv):
  """The PATH[:ARG] of --config=PATH[:ARG] (or --config PATH[:ARG]) in argv, if given."""
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


# The experiment configs, beside trainnets/ in the checkout and where pip installs the project.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(PROJECT_ROOT, 'experiments')


def config_path(path):
  """The config file `path` names: a file as given (relative to the working directory), else the same relative path
  in the project (experiments/NAME.py), else an experiment's name (NAME.py or NAME): so a config is named the same
  way from any directory. `path` itself where none exists."""
  if os.path.isfile(path) or os.path.isabs(path):
    return path
  for candidate in (os.path.join(PROJECT_ROOT, path), os.path.join(EXPERIMENTS, path),
                    os.path.join(EXPERIMENTS, f'{path}.py')):
    if os.path.isfile(candidate):
      return candidate
  return path


def _missing_config_file(path):
  names = sorted(f for f in os.listdir(EXPERIMENTS) if f.endswith('.py') and not f.startswith('_')
                 and 'get_config' in open(os.path.join(EXPERIMENTS, f)).read())
  return ConfigError(f'experiment file {path} does not exist; pass one of ' +
                     ', '.join(f'experiments/{n}' for n in names))


def parse_flags(flag_values, argv):
  """flag_values(argv) with every problem as a ConfigError of one line, each found by a check before the flags
  library reads the config: a config file that is missing, is not Python, or fails to load; an override of a key
  the config lacks; a stray positional argument. A value of the wrong type is absl's own message. Returns argv's
  first element (the program)."""
  spec = _config_spec(argv)
  if spec == '':
    raise ConfigError('--config is empty; pass --config=experiments/NAME.py[:ARGS] (see README.md)')
  if spec:
    path, *arg = spec.split(':', 1)
    found = config_path(path)
    if found != path:  # the flags library reads the file that was found
      spec = ':'.join([found, *arg])
      argv = [f'--config={spec}' if a.startswith('--config=') else spec if i and argv[i - 1] == '--config' else a
              for i, a in enumerate(argv)]
    default = config_file_default(spec)
    check_overrides(default, argv)
    # what a key an older workdir lacks ran as, where its definition states nothing else (trainnets/config_keys.py)
    config_keys.record_defaults(workdir.flatten(workdir.config_to_dict(default)))
  try:
    rest = flag_values(argv)
  except flags.Error as e:  # absl's message: a value it cannot parse as the key's type
    raise ConfigError(' '.join(str(e).split())) from None
  if len(rest) > 1:
    stray = rest[1]
    hint = f'; did you mean --{stray}?' if '=' in stray and not stray.startswith('-') else ''
    raise ConfigError(f'unexpected argument {stray!r}: every argument is a flag such as --config.KEY=VALUE{hint}')
  return rest[:1]


def check_overrides(default, argv):
  """A ConfigError naming the first --config.KEY[=VALUE] of argv whose KEY the config does not have."""
  for a in argv[1:]:
    if not a.startswith('--config.'):
      continue
    key = a[len('--config.'):].split('=', 1)[0]
    node, parts = default, key.split('.')
    for i, part in enumerate(parts):
      if isinstance(node, ml_collections.ConfigDict) and part in node:
        node = node[part]
        continue
      near = difflib.get_close_matches(part, list(node.keys()) if isinstance(node, ml_collections.ConfigDict)
                                       else [], n=1)
      hint = f' (did you mean {".".join([*parts[:i], near[0], *parts[i + 1:]])}?)' if near else ''
      raise ConfigError(f'unknown config key {key!r} in --config.{key}{hint}; print the valid keys with --show_config')


def _parse_flags(argv):
  try:
    return parse_flags(flags.FLAGS, argv)
  except UserError as e:
    fail(str(e))


def check_python_file(path, what):
  """A ConfigError in one line unless `path` holds Python that compiles (a config file with a syntax error, or a
  README passed by mistake), before it is imported."""
  try:
    with open(path, 'rb') as f:
      compile(f.read(), path, 'exec')
  except (SyntaxError, ValueError, OSError) as e:
    where = f' (line {e.lineno}: {e.msg})' if isinstance(e, SyntaxError) else f' ({e})'
    raise ConfigError(f'{what}={path} is not a Python file that can be imported{where}; pass a config file that '
                      'defines get_config(arg), e.g. experiments/hidden_units.py') from None


def load_python_file(path, name):
  """The module in the Python file `path` (a config or sweep file), imported under `name`."""
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def config_file_default(spec):
  """get_config(ARG) of the config file PATH in `spec` = PATH[:ARG], without overrides; a ConfigError in one line
  if the file is missing, is not Python, or its get_config is missing or raises."""
  path, *arg = spec.split(':', 1)
  if not os.path.isfile(path):
    raise _missing_config_file(path)
  check_python_file(path, '--config')
  try:
    module = load_python_file(path, 'config_file_default')
  except Exception as e:  # noqa: BLE001 (a config file's import may raise anything)
    raise ConfigError(f'--config={path} could not be imported ({type(e).__name__}: {e}); fix the file') from None
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'--config={path} defines no get_config(arg); a config file returns its ConfigDict from it')
  try:
    config = module.get_config(*arg)
  except Exception as e:  # noqa: BLE001 (get_config refuses its argument with any exception)
    raise ConfigError(f'--config={spec} could not be loaded ({type(e).__name__}: {e})') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'--config={path}: get_config returned a {type(config).__name__}, not an '
                      'ml_collections.ConfigDict')
  return config


def config_from_flag(config_flag):
  """The resolved config behind a DEFINE_config_file flag (parse_flags has checked the file and the keys)."""
  value = config_flag.value
  if value is None:
    raise ConfigError('no --config given; pass --config=experiments/NAME.py[:ARGS] (see README.md)')
  check_finite(value)
  return value


def check_finite(config, prefix=''):
  """A ConfigError naming the first number of the config that is infinite or NaN (no key means either)."""
  for key, v in config.items():
    values = v if isinstance(v, (tuple, list)) else (v,)
    if isinstance(v, ml_collections.ConfigDict):
      check_finite(v, f'{prefix}{key}.')
    elif any(isinstance(x, float) and not math.isfinite(x) for x in values):
      raise ConfigError(f'{prefix}{key}={v} is not a finite number; pass a finite value')


def load_config(spec, overrides=None):
  """The config train.py would run for --config=`spec` and `overrides` {KEY: VALUE as typed on the command
  line}, parsed by the same flags; a ConfigError for whatever train.py would refuse while parsing them."""
  argv = ['load_config', f'--config={spec}', *[f'--config.{k}={v}' for k, v in (overrides or {}).items()]]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, '', flag_values=values, lock_config=True, sys_argv=argv)
  parse_flags(values, argv)
  return config_from_flag(holder)


def define_distributed_flags():
  """--coordinator_address, --num_processes, --process_id, --join_timeout (trainnets/training/distributed.py)."""
  from trainnets.training import distributed  # noqa: PLC0415 (imports no JAX)

  return (flags.DEFINE_string('coordinator_address', None, 'Multi-process jobs: HOST:PORT of process 0\'s '
                              'coordinator (without these three flags, SLURM\'s or a TPU VM\'s environment is used).'),
          flags.DEFINE_integer('num_processes', None, 'Multi-process jobs: how many processes.'),
          flags.DEFINE_integer('process_id', None, 'Multi-process jobs: this process\'s index, 0..num_processes-1.'),
          flags.DEFINE_float('join_timeout', distributed.JOIN_TIMEOUT_S, 'Multi-process jobs: seconds to wait for '
                             'every process to start before stopping with a line naming the missing ones.'))


def start_distributed(distributed_flags, config):
  """Joins a multi-process job if the flags or the scheduler describe one (before JAX's devices are touched),
  then checks that every process resolved the same config."""
  from trainnets.training import distributed  # noqa: PLC0415

  described = distributed.initialize(*(f.value for f in distributed_flags))
  check_backend()
  if described:
    print(described, flush=True)
    distributed.check_same_config(config.to_dict())


def check_backend():
  """A ConfigError in one line if JAX cannot start a backend for the platforms asked for (JAX_PLATFORMS=cuda on a
  machine without a GPU, or without jax's CUDA plugin), instead of JAX's traceback at the first computation."""
  import jax  # noqa: PLC0415

  try:
    jax.devices()
  except Exception as e:  # noqa: BLE001 (jax 0.10 raises RuntimeError or a bare AssertionError, by platform)
    asked = os.environ.get('JAX_PLATFORMS', '')
    raise ConfigError(f'JAX could not start a backend{f" for JAX_PLATFORMS={asked}" if asked else ""} '
                      f'({errors.one_line(e)[:200] or type(e).__name__}); unset JAX_PLATFORMS, or install the jax '
                      'build for that platform (docs/install.md)') from None


def _multiprocess():
  jax = sys.modules.get('jax')
  return jax is not None and jax.distributed.is_initialized()


def main(run):
  """Runs `run(argv)` under absl, with flag errors and UserErrors reported as one line. In a multi-process job
  any failure ends this process at once with a last line saying so (trainnets/training/distributed.py), never a hang."""

  def wrapped(argv):
    sys.unraisablehook = process.quiet_closed_loops
    if not flags.FLAGS['verbosity'].present:  # keep JAX's start-up INFO lines (no TPU found, ...) out of the way
      logging.set_verbosity(logging.WARNING)
      logging.get_absl_handler().addFilter(process.reported_elsewhere)
    try:
      run(argv)
    except Interrupted as e:  # a first Ctrl-C: what could be saved was saved
      fail(str(e), e.exit_status, prefix='')
    except KeyboardInterrupt:
      fail('interrupted (Ctrl-C) at once: checkpointed runs resume from their last saved checkpoint when the same '
           'command is run again', Interrupted.exit_status, prefix='')
    except UserError as e:
      fail(str(e))
    except Exception as e:
      if _multiprocess():
        from trainnets.training import distributed  # noqa: PLC0415

        distributed.exit_after_failure(e)
      raise

  app.run(wrapped, flags_parser=_parse_flags)
