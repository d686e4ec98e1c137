"""Setting up the process before JAX starts (JAX is imported only to configure it): XLA's CPU device count,
glibc's malloc, the persistent compilation cache, how the random generator and the run-once programs are compiled
on the CPU, and the filters that keep libraries' duplicate error reports out of the one-line errors. The entry
points call `prepare_cpu` after importing their modules and before the first computation.
"""
import ctypes
import importlib.util
import logging as std_logging
import os
import platform
import sys

from trainnets.errors import ConfigError
from trainnets.errors import UserError

COUNT_FLAG = '--xla_force_host_platform_device_count'
# XLA:CPU's copy insertion, told to analyse a loop's live ranges by region, stops copying a loop's state (a sweep's
# weights) at every step: the same values, with fewer copies (docs/performance.md).
COPY_FLAG = '--xla_cpu_copy_insertion_use_region_analysis'


def _switched_on(environ, name, what_0, what_1):
  """Whether the environment variable `name` is 1 or unset (True) or 0 (False); any other value is a UserError
  that says what 0 and 1 do."""
  value = environ.get(name, '1')
  if value not in ('0', '1'):
    raise UserError(f'{name}={value!r} is not understood; set it to 0 ({what_0}) or 1 ({what_1}, the default), '
                    'or unset it')
  return value == '1'


def xla_flags(environ=os.environ, cores=None):
  """XLA_FLAGS that split the CPU into one JAX device per core and let copy insertion analyse loops by region, each
  unless the user's XLA_FLAGS already sets it.

  XLA's CPU backend runs a program's small loops on one core, so a sweep of models sharded over two CPU devices
  on a 2-core machine runs twice as fast (benchmarks/toy_sgd.py). It must be set before JAX starts, which is why
  it lives here, in a module that does not import JAX; on GPUs and TPUs, which JAX uses when present, neither flag
  changes anything.
  """
  flags = environ.get('XLA_FLAGS', '')
  if COUNT_FLAG not in flags:
    flags += f' {COUNT_FLAG}={cores or os.cpu_count() or 1}'
  if COPY_FLAG not in flags:
    flags += f' {COPY_FLAG}=true'
  return flags.strip()


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

  Each execution of a jitted XLA:CPU program allocates its temporaries afresh from XLA's worker threads; with
  glibc's defaults every page of those blocks faults on its first touch, every step. Blocks below 1 GiB from the
  heap, heaps grown 256 MB at a time and not trimmed until 1 GiB is free, avoid that; the price is that the
  process keeps its peak heap. docs/fashion_mnist/cnn_cpu_performance.md has the measurements. Left alone: other
  C libraries; machines with a JAX GPU or TPU plugin installed; users who set glibc's own variables
  (MALLOC_TOP_PAD_, GLIBC_TUNABLES, ...), whose choice wins; and KEEP_FREED_MEMORY=0, which keeps glibc's
  defaults.
  """
  if not _switched_on(environ, OPT_OUT, "glibc's malloc defaults", 'keep freed memory'):
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if any(v in environ for v in _USER_MALLOC_VARIABLES):
    return False
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms.split(',')[0].strip() not in ('', 'cpu'):
    return False
  if not platforms and any(find_spec(m) is not None for m in _ACCELERATOR_PLUGINS):
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items())


CACHE_OPT_OUT = 'COMPILATION_CACHE'  # =0: compile every program afresh


def compilation_cache(environ=os.environ):
  """Turns on JAX's persistent compilation cache, so a program compiled once (same shapes, code, flags and JAX)
  is loaded, not compiled again, by later runs: most of a short run's time is compilation (docs/performance.md).
  The directory is $JAX_COMPILATION_CACHE_DIR where set, else ~/.cache/jax-training/xla ($XDG_CACHE_HOME's
  where set); every program is cached unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise.
  COMPILATION_CACHE=0 turns it off. Returns the directory, or None when off. Call it before the first
  compilation."""
  on = _switched_on(environ, CACHE_OPT_OUT, 'compile every program afresh', 'cache compiled programs')
  import jax  # noqa: PLC0415 (configuring it starts no backend)

  if not on:
    jax.config.update('jax_compilation_cache_dir', None)
    return None
  directory = environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(
      environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'jax-training', 'xla')
  jax.config.update('jax_compilation_cache_dir', directory)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return directory


THREEFRY_OPT_OUT = 'FLAT_THREEFRY'  # =0: JAX's own lowering of its random generator on the CPU


def flat_threefry(environ=os.environ):
  """Lowers the random generator's hash over flat arrays on the CPU (trainnets/kernels/threefry.py: the same bits,
  compiled faster) unless FLAT_THREEFRY=0. Returns whether it did. Call it before the first compilation."""
  if not _switched_on(environ, THREEFRY_OPT_OUT, "JAX's own lowering of its random generator",
                      'the random generator compiled over flat arrays'):
    return False
  from trainnets.kernels import threefry  # noqa: PLC0415 (imports JAX, which starts no backend)

  return threefry.install()


QUICK_OPT_OUT = 'QUICK_COMPILE'  # =0: every program compiled at LLVM's default optimisation on the CPU


def quick_compile(environ=os.environ):
  """Compiles at LLVM's -O1 on the CPU the programs that compute the same bits there (trainnets/quick_compile.py:
  the programs that run once, compiled faster), unless QUICK_COMPILE=0. Returns whether it did. Call it before the
  first compilation."""
  if not _switched_on(environ, QUICK_OPT_OUT, "every program compiled at LLVM's default optimisation",
                      'the programs that compute the same bits at -O1 compiled at -O1'):
    return False
  from trainnets import quick_compile as quick  # noqa: PLC0415 (imports JAX, which starts no backend)

  return quick.install()


def prepare_cpu(cores=None, environ=os.environ):
  """What every entry point does before JAX starts: glibc's malloc keeps freed memory (keep_freed_memory),
  XLA_FLAGS split the CPU into `cores` JAX devices (xla_flags; default one per core), compiled programs are cached
  (compilation_cache; on any platform), the random generator's hash is compiled over flat arrays (flat_threefry),
  and the programs that compute the same bits at LLVM's -O1 are compiled at -O1 (quick_compile). Returns whether
  freed memory is kept. CPU_CONV, which once chose the CPU's convolutions, is refused: model.kernels does."""
  if 'CPU_CONV' in environ:
    raise ConfigError(f'CPU_CONV={environ["CPU_CONV"]!r} is no longer read; choose the convolution kernels with '
                      '--config.model.kernels (auto, none or names such as onednn_conv; see '
                      'trainnets/kernels/__init__.py) and unset CPU_CONV')
  kept = keep_freed_memory(environ)
  environ['XLA_FLAGS'] = xla_flags(environ, cores)
  compilation_cache(environ)
  flat_threefry(environ)
  quick_compile(environ)
  return kept


def reported_elsewhere(record):
  """A logging filter: orbax's own ERROR records (a failed asynchronous write, logged with its traceback from
  the writing thread) are dropped, since trainnets/training/checkpoint.py raises each such failure as one
  CheckpointError line. --verbosity keeps them."""
  return not (record.levelno >= std_logging.ERROR and f'{os.sep}orbax{os.sep}' in record.pathname)


def quiet_closed_loops(unraisable):
  """sys.unraisablehook, less one harmless case: when orbax abandons a checkpoint read or write that failed (a
  full disk, a damaged checkpoint), tensorstore's threads finish the other reads and writes later and find
  orbax's event loop closed; each prints a RuntimeError traceback around the one-line CheckpointError that says
  what is wrong."""
  if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed':
    return
  sys.__unraisablehook__(unraisable)
