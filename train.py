"""Trains an experiment: python train.py --config=experiments/NAME.py[:ARGS] --workdir=DIR [--config.KEY=VALUE].

The config names its trainer; the trainer writes config.json, metrics.jsonl, results.json, results.md and
figures/ into the workdir. See README.md for every experiment's command.
"""
import importlib
import os

from training import cli

os.environ['XLA_FLAGS'] = cli.cpu_devices_flag()  # before anything imports JAX

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from training.errors import ConfigError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. experiments/hidden_units.py:quick',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for this run\'s config, metrics, results and figures.')
_SHOW_CONFIG = flags.DEFINE_bool('show_config', False, 'Print the resolved config and exit.')

# trainer name -> module with train_and_evaluate(config, workdir); imported lazily so that a toy experiment does
# not pay for TensorFlow's import.
TRAINERS = {'hidden_units': 'experiments.hidden_units'}


def trainer_module(config):
  if config.get('trainer') not in TRAINERS:
    raise ConfigError(f'config.trainer {config.get("trainer")!r} is unknown; choose one of {sorted(TRAINERS)}')
  return importlib.import_module(TRAINERS[config.trainer])


def run(argv):
  del argv
  config = cli.config_from_flag(_CONFIG)
  if _SHOW_CONFIG.value:
    print(config)
    return
  trainer_module(config).train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  cli.main(run)
