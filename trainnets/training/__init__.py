"""Trainers and what they share (steps, optimisers, checkpoints, metrics, workdirs, sharding, multi-process jobs).

A trainer is a module of this package named by a config's `trainer` key. It defines
  train_and_evaluate(config, workdir)   trains and evaluates, writing the workdir's data files; returns the
                                        results in process 0 (None elsewhere, or when a signal stopped it)
  evaluate_workdir(config, workdir, **options)  evaluates a trained workdir (eval.py's flags as options) into
                                        eval.json; returns it in process 0
  validate(config)   raises ConfigError for a value that cannot run, before any data is read
  CPU_DEVICES   JAX devices to split a CPU-only machine into (None: one per core)
Trainers write data only; experiments/report.py renders results.md and figures from the workdir, so nothing here
imports experiments/. A new trainer is a new module here, a report of the same name in experiments/reports/, and
configs naming it.
"""
from trainnets import named


def trainer(name):
  """The trainer module trainnets/training/<name>.py; a ConfigError listing the trainers if there is none."""
  return named.module('trainnets.training', name, ('train_and_evaluate', 'evaluate_workdir', 'validate', 'CPU_DEVICES'),
                      'config.trainer')
