"""Experiment configs (`get_config(arg)`) and the code that turns their results into tables and figures.

A config's `trainer` names the module whose `train_and_evaluate(config, workdir)` trains it and whose
`evaluate(config, workdir, **kw)` evaluates a trained workdir. Modules are imported on demand, so a toy
experiment never pays for TensorFlow's import.
"""
import importlib

from training.errors import ConfigError

TRAINERS = {'hidden_units': 'experiments.hidden_units', 'classifier': 'training.classifier'}


def trainer_module(config):
  if config.get('trainer') not in TRAINERS:
    raise ConfigError(f'config.trainer {config.get("trainer")!r} is unknown; choose one of {sorted(TRAINERS)}')
  return importlib.import_module(TRAINERS[config.trainer])
