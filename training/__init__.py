"""Trainers and what they share (steps, optimisers, checkpoints, metrics, workdirs, sharding, multi-process jobs).

A trainer is a module of this package named by a config's `trainer` key. It defines
  train_and_evaluate(config, workdir, report)   trains, evaluates and writes the workdir's files
  evaluate_workdir(config, workdir, report, **options)  evaluates a trained workdir (eval.py's flags as options)
  CPU_DEVICES   JAX devices to split a CPU-only machine into (None: one per core)
`report` is the experiment's module of experiments/reports/ that turns results into tables and figures; the
entry points pass it in, so nothing here imports experiments/. A new trainer is a new module here and configs
naming it.
"""
import named


def trainer(name):
  """The trainer module training/<name>.py; a ConfigError listing the trainers if there is none."""
  return named.module('training', name, ('train_and_evaluate', 'evaluate_workdir', 'validate', 'CPU_DEVICES'),
                      'config.trainer')
