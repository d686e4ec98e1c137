"""Trainers and what they share (steps, optimisers, checkpoints, metrics, workdirs, sharding, multi-process jobs).

A trainer is a module of this package named by a config's `trainer` key. It defines
  train_and_evaluate(config, workdir, report)   trains, evaluates and writes the workdir's files
  evaluate(config, workdir, report, **options)  evaluates a trained workdir (eval.py's flags as options)
  CPU_DEVICES   JAX devices to split a CPU-only machine into (None: one per core)
`report` is the experiment's module of experiments/reports/ that turns results into tables and figures; the
entry points pass it in, so nothing here imports experiments/. A new trainer is a new module here and configs
naming it.
"""
import importlib
import pkgutil

from errors import ConfigError

_API = ('train_and_evaluate', 'evaluate', 'CPU_DEVICES')


def _is_trainer(module):
  return all(hasattr(module, a) for a in _API)


def trainer(name):
  """The trainer module training/<name>.py; a ConfigError listing the trainers if there is none."""
  if isinstance(name, str) and name.isidentifier():
    try:
      module = importlib.import_module(f'training.{name}')
    except ModuleNotFoundError as e:
      if e.name != f'training.{name}':
        raise
      module = None
    if module is not None and _is_trainer(module):
      return module
  names = sorted(m.name for m in pkgutil.iter_modules(__path__)
                 if _is_trainer(importlib.import_module(f'training.{m.name}')))
  raise ConfigError(f'config.trainer {name!r} is unknown; choose one of {", ".join(names)} (modules of training/)')
