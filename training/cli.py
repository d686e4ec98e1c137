"""What the entry points share: parsing flags and configs, and turning user errors into one line.

`train.py` and `eval.py` stay thin: they define their flags, then call `main(run)`. A UserError anywhere below
becomes `error: <message>` on stderr and exit status 2, with no traceback; any other exception is a bug and keeps
its traceback.
"""
import ctypes
import importlib.util
import os
import platform
import sys

from absl import app
from absl import logging
from absl import flags
import ml_collections
from ml_collections import config_flags

from training.errors import ConfigError
from training.errors import UserError

EXIT_USER_ERROR = 2
COUNT_FLAG = '--xla_force_host_platform_device_count'


def cpu_devices_flag(environ=os.environ, cores=None):
  """XLA_FLAGS that split the CPU into one JAX device per core, unless the user already chose a count.

  XLA's CPU backend runs a program's small loops on one core, so a sweep of models sharded over two CPU devices
  on a 2-core machine runs twice as fast (benchmarks/toy_sgd.py). It must be set before JAX starts, which is why
  it lives here, in a module that does not import JAX; on GPUs and TPUs, which JAX uses when present, it changes
  nothing.
  """
  flags_now = environ.get('XLA_FLAGS', '')
  if COUNT_FLAG in flags_now:
    return flags_now
  return f'{flags_now} {COUNT_FLAG}={cores or os.cpu_count() or 1}'.strip()


def quiet_tensorflow(environ=os.environ):
  """TensorFlow's C++ INFO and WARNING lines off, errors kept, unless the user set these variables: a user error
  must stay one line. TensorFlow prints its oneDNN notice at any log level unless TF_ENABLE_ONEDNN_OPTS=0; here
  TF only reads and augments data, and its oneDNN kernels serve model arithmetic this project never runs in TF.
  Must run before TensorFlow is imported."""
  environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = {_M_TOP_PAD: 1 << 28, _M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30}
_USER_MALLOC_VARIABLES = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_',
                          'GLIBC_TUNABLES')
OPT_OUT = 'KEEP_FREED_MEMORY'  # =0: leave glibc's malloc as it is
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'jax_rocm7_plugin', 'libtpu')


def keep_freed_memory(environ=os.environ, find_spec=importlib.util.find_spec):
  """Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel, when JAX will
  compute on the CPU. Returns whether it did; a KEEP_FREED_MEMORY other than 0 or 1 is a UserError. Call it
  before JAX starts its threads.

  Each execution of a jitted XLA:CPU program allocates its temporaries afresh, from XLA's worker threads: for the
  Fashion-MNIST CNN's training step one block of 45 MB. By default glibc maps a block that large straight from
  the kernel, or grows a worker thread's heap for it and shrinks the heap again when it is freed; either way
  every page faults on its first touch, every step: 11,000 page faults and ~12 ms of kernel time per 55 ms step
  on 2 cores. Blocks below 1 GiB from the heap, heaps grown 256 MB at a time and not trimmed until 1 GiB is
  free: ~100 page faults per step, and the step takes 48 ms (benchmarks/fashion_mnist_cnn.py; the hidden-units
  sweep is unchanged). The price: the process keeps its peak heap (freed memory is reused, not returned).
  Left alone: other C libraries; machines with a JAX GPU or TPU plugin installed (not measured there); users
  who set glibc's own variables (MALLOC_TOP_PAD_, GLIBC_TUNABLES, ...), whose choice wins; and KEEP_FREED_MEMORY=0,
  which keeps glibc's defaults (setting any one of glibc's thresholds by hand would not: it also switches off
  glibc's dynamic mmap threshold, which made JAX 20% and PyTorch 28% slower on this CNN).
  """
  if environ.get(OPT_OUT, '1') not in ('0', '1'):
    raise UserError(f'{OPT_OUT}={environ[OPT_OUT]!r} is not understood; set it to 0 (glibc\'s malloc defaults) '
                    'or 1 (keep freed memory, the default), or unset it')
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if environ.get(OPT_OUT) == '0' or any(v in environ for v in _USER_MALLOC_VARIABLES):
    return False
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms.split(',')[0].strip() not in ('', 'cpu'):
    return False
  if not platforms and any(find_spec(m) is not None for m in _ACCELERATOR_PLUGINS):
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items())


def prepare_cpu(cores=None, environ=os.environ):
  """What every entry point does before JAX starts: glibc's malloc keeps freed memory (keep_freed_memory),
  XLA_FLAGS split the CPU into `cores` JAX devices (cpu_devices_flag; default one per core), and CPU_CONV is
  checked (check_cpu_conv). Returns whether freed memory is kept."""
  kept = keep_freed_memory(environ)
  environ['XLA_FLAGS'] = cpu_devices_flag(environ, cores)
  check_cpu_conv(environ)
  return kept


def check_cpu_conv(environ=os.environ):
  """Which library computes convolutions on the CPU, 'onednn' or 'xla' (nets/onednn.py); a CPU_CONV it cannot
  honour is a ConfigError now rather than a traceback at the first convolution. Imports JAX (not its backend),
  so call it after XLA_FLAGS are set."""
  from nets import onednn  # noqa: PLC0415

  try:
    return onednn.library(environ)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if 'Traceback (most recent call last)' in text:  # get_config raised: keep the flag and the exception line
      last = [l for l in text.splitlines() if l.strip()][-1].strip()
      text = f'{text.split(": ")[0]}: {last}'
    fail(text.replace('\n', ' '))
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config does not have
    inner = e.args[0] if e.args else e
    if not isinstance(inner, KeyError):  # e.g. the config file has no get_config
      fail(f'the --config file could not be loaded ({inner}); it must define get_config(arg)')
    text = str(inner.args[0] if inner.args else inner)
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
    path = config_flags.get_config_filename(flags.FLAGS[config_flag.name])
    if not os.path.isfile(path):
      here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments')
      names = sorted(f for f in os.listdir(here) if f.endswith('.py') and not f.startswith('_')
                     and 'get_config' in open(os.path.join(here, f)).read())
      raise ConfigError(f'experiment file {path} does not exist; pass one of ' +
                        ', '.join(f'experiments/{n}' for n in names))
    error = str(object.__getattribute__(value, '_error')).splitlines()[0]
    raise ConfigError(f'--config={path} could not be loaded ({error}); it must define get_config(arg)')
  return value


def define_distributed_flags():
  """--coordinator_address, --num_processes, --process_id (training/distributed.py)."""
  return (flags.DEFINE_string('coordinator_address', None, 'Multi-process jobs: HOST:PORT of process 0\'s '
                              'coordinator (without these three flags, SLURM\'s or a TPU VM\'s environment is used).'),
          flags.DEFINE_integer('num_processes', None, 'Multi-process jobs: how many processes.'),
          flags.DEFINE_integer('process_id', None, 'Multi-process jobs: this process\'s index, 0..num_processes-1.'))


def start_distributed(distributed_flags):
  """Joins a multi-process job if the flags or the scheduler describe one (before JAX's devices are touched)."""
  from training import distributed  # noqa: PLC0415

  try:
    described = distributed.initialize(*(f.value for f in distributed_flags))
  except distributed.DistributedError as e:
    raise ConfigError(str(e)) from None
  if described:
    print(described, flush=True)


def _multiprocess():
  jax = sys.modules.get('jax')
  return jax is not None and jax.distributed.is_initialized()


def main(run):
  """Runs `run(argv)` under absl, with flag errors and UserErrors reported as one line. In a multi-process job
  any failure ends this process at once with a last line saying so (training/distributed.py), never a hang."""

  def wrapped(argv):
    if not flags.FLAGS['verbosity'].present:  # keep JAX's start-up INFO lines (no TPU found, ...) out of the way
      logging.set_verbosity(logging.WARNING)
    try:
      run(argv)
    except UserError as e:
      if _multiprocess():  # a normal exit would wait for the other processes at JAX's shutdown barrier
        print(f'error: {e}', file=sys.stderr, flush=True)
        os._exit(EXIT_USER_ERROR)
      fail(str(e))
    except Exception as e:  # noqa: BLE001
      if _multiprocess():
        from training import distributed  # noqa: PLC0415

        distributed.exit_after_failure(e)
      raise

  app.run(wrapped, flags_parser=_parse_flags)
