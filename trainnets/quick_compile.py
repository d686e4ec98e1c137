"""Programs that run once, compiled faster at LLVM's -O1, where they compute the same bits.

XLA:CPU hands every fusion of a program to LLVM at its backend optimisation level, 2 unless told otherwise. For a
program that runs once or a few times (the toy data sets, the initial parameters, the seeds' keys and the indices of
the examples), the time LLVM spends optimising is most of what it costs. Those programs are compiled through `jit`
or with `options()`, and each computes the same bits at -O1 as at -O2 (tests/test_quick_compile.py, and each
program's own test against one compiled the default way). Not every program does: at -O0 the data sets come out
with other bits, and the epoch programs of the hidden-units sweep, at -O1, trained a few nets of the ablation sweep
to other records, so they keep the default.

process.prepare_cpu installs it unless QUICK_COMPILE=0; where JAX computes on another platform it changes nothing.
Imports nothing of the project, so every layer may use it (the data sets' program, the trainers').
"""
import functools
import threading

import jax

OPTIONS = {'xla_backend_optimization_level': 1}
_state = {'installed': False}


def install():
  """Compiles the programs that ask for it (`jit`, `options()`) at -O1 on the CPU. Returns True."""
  _state['installed'] = True
  return True


def uninstall():
  _state['installed'] = False


def options(base=None):
  """The compiler options of a program that computes the same bits at -O1: `base` (a dict or None), with OPTIONS
  where installed and JAX computes on the CPU."""
  if not _state['installed'] or jax.default_backend() != 'cpu':
    return base
  return {**(base or {}), **OPTIONS}


def jit(fun=None, **jit_kwargs):
  """jax.jit(fun, **jit_kwargs) with compiler_options=options(), decided at its first call (JAX's platform is
  known by then): a decorator, with or without keyword arguments."""
  if fun is None:
    return functools.partial(jit, **jit_kwargs)
  return _Deferred(fun, jit_kwargs)


class _Deferred:
  """A jitted function made at its first call or lowering, once, whichever thread gets there first."""

  def __init__(self, fun, jit_kwargs):
    functools.update_wrapper(self, fun)
    self._fun, self._jit_kwargs, self._jitted = fun, jit_kwargs, None
    self._lock = threading.Lock()

  def _made(self):
    with self._lock:
      if self._jitted is None:
        self._jitted = jax.jit(self._fun, compiler_options=options(), **self._jit_kwargs)
      return self._jitted

  def __call__(self, *args, **kwargs):
    return self._made()(*args, **kwargs)

  def lower(self, *args, **kwargs):
    return self._made().lower(*args, **kwargs)
