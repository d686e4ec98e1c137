"""Experiment configs (`get_config(arg)`) and the code that turns their results into tables and figures.

A config's `trainer` names the module whose `train_and_evaluate(config, workdir)` trains it and whose
`evaluate(config, workdir, **kw)` evaluates a trained workdir. Modules are imported on demand, so a toy
experiment never pays for TensorFlow's import.
"""
import importlib

from errors import ConfigError

TRAINERS = {'hidden_units': 'experiments.hidden_units', 'classifier': 'training.classifier'}

# JAX devices to split a CPU-only machine into, per trainer (None: one per core). A sweep of independent
# models has no collectives and runs twice as fast on 2 cores as 2 devices. Data-parallel training gains nothing
# from simulated CPU devices (measured: 1,254 vs 1,317 images/s for the Fashion-MNIST CNN) and its all-reduce
# between them can stall XLA's in-process collectives on a small machine (seen once: an abort after 40 s), so
# it uses one. An XLA_FLAGS device count set by the user always wins.
CPU_DEVICES = {'hidden_units': None, 'classifier': 1}


# The figures of a run's results.json that a sweep can summarise (experiments/sweep.py --metric), per trainer.
METRICS = {
    'classifier': ('test_accuracy', 'test_loss', 'top1_error', 'top5_error', 'centre_crop_top1_error',
                   'centre_crop_top5_error', 'final_loss', 'wall_time_s'),
    'hidden_units': ('num_models', 'train_time_s', 'wall_time_s'),
}


def metrics(config):
  """The figures of results.json a sweep of `config` can summarise."""
  if config.get('trainer') not in METRICS:
    raise ConfigError(f'config.trainer {config.get("trainer")!r} is unknown; choose one of {sorted(TRAINERS)}')
  return METRICS[config.trainer]


def cpu_devices(config):
  return CPU_DEVICES.get(config.get('trainer'), 1)


def trainer_module(config):
  if config.get('trainer') not in TRAINERS:
    raise ConfigError(f'config.trainer {config.get("trainer")!r} is unknown; choose one of {sorted(TRAINERS)}')
  return importlib.import_module(TRAINERS[config.trainer])
