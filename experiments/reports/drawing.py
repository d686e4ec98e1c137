"""Where a report's figures are drawn: here, one after another, or in worker processes while the report goes on.

A report that computes everything its figures show before drawing them (experiments/reports/hidden_units.py, whose
figure functions import only numpy and matplotlib) hands each figure over as `draw(module, function, path,
**numbers)`, naming the function that draws it, and waits for the returned future once it has computed everything
else: the process handing figures over never imports what draws them. `Here()` draws at once; `Pool(modules)`
draws in one worker process per core, forked from a server process that imported `modules` once, so a worker
starts in milliseconds and none of them imports JAX or the trainer. The server starts importing when the pool is
made, without the caller waiting: train.py makes it before training, so those imports overlap the work.
"""
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import contextlib
import importlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys


class Here:
  """Draws each figure at once, in this process; an error is raised where the figure is handed over."""

  def draw(self, module, function, path, **numbers):
    _draw(module, function, path, numbers)
    done = concurrent.futures.Future()
    done.set_result(None)
    return done

  def close(self):
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _draw(module, function, path, numbers):
  getattr(importlib.import_module(module), function)(path, **numbers)


def _start_worker():
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


class Pool(Here):
  """Draws figures in `workers` processes (default: one per core), forked from a server that has imported
  `modules`; a figure's error is raised by its future's result(), in the process that waits for it. A figure whose
  worker died (killed, out of memory) is drawn here instead: the pool only ever makes a report sooner."""

  def __init__(self, modules, workers=None):
    context = multiprocessing.get_context('forkserver')  # not fork: a JAX process's threads do not survive a fork
    context.set_forkserver_preload(list(modules))  # and not this process's __main__, which imports JAX
    multiprocessing.forkserver.ensure_running()  # the server starts importing now, without waiting for it
    self._pool = concurrent.futures.ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context,
                                                        initializer=_start_worker)

  def draw(self, module, function, path, **numbers):
    job = (module, function, path, numbers)
    try:
      with _main_left_alone():  # a submission may start a worker
        return _OrHere(self._pool.submit(_draw, *job), job)
    except BrokenProcessPool:
      return Here().draw(module, function, path, **numbers)

  def close(self):
    self._pool.shutdown()


@contextlib.contextmanager
def _main_left_alone():
  """Workers started in here do not run this process's main module again: multiprocessing has each new worker
  import the parent's __main__ (train.py, and with it JAX and the trainer) unless __main__ names neither a file
  nor a module."""
  main = sys.modules['__main__']
  saved = {k: main.__dict__[k] for k in ('__file__', '__spec__') if k in main.__dict__}
  main.__dict__.pop('__file__', None)
  main.__spec__ = None
  try:
    yield
  finally:
    main.__dict__.pop('__spec__', None)
    main.__dict__.update(saved)


class _OrHere:
  """A figure's future from the pool, drawn here if the pool broke before it was drawn."""

  def __init__(self, future, job):
    self._future, self._job = future, job

  def result(self):
    try:
      return self._future.result()
    except BrokenProcessPool:
      return _draw(*self._job)


def start(modules, workers=None):
  """A Pool drawing with `modules` imported, or Here() where this machine has one core or no worker process can
  start (a sandbox without Unix sockets, a temporary directory whose path is too long for one): the figures are
  the same either way."""
  workers = workers or os.cpu_count() or 1
  if workers < 2:
    return Here()
  try:
    return Pool(modules, workers)
  except OSError as e:
    print(f'drawing the figures in this process: no worker process could start ({e})', file=sys.stderr)
    return Here()
