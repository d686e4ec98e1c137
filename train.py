"""Trains an experiment: python train.py --config=experiments/NAME.py[:ARGS] --workdir=DIR [--config.KEY=VALUE].

The config names its trainer (config.trainer: a module of trainnets/training/) and so its report (experiments/reports/);
the trainer writes config.json, metrics.jsonl and results.json into the workdir, then the report renders results.md
and figures/ from them (experiments/report.py, which redraws a finished workdir alone).
See README.md for every experiment's command.
"""
from trainnets import tf_host

tf_host.quiet()  # before anything imports TensorFlow

import textwrap  # noqa: E402

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import experiments  # noqa: E402
from experiments import report  # noqa: E402
from trainnets import training  # noqa: E402
from trainnets.training import cli  # noqa: E402
from trainnets.training import distributed  # noqa: E402
from trainnets.training import process  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                          'experiments/hidden_units.py:quick', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for this run\'s config, metrics, results and figures.')
_SHOW_CONFIG = flags.DEFINE_bool('show_config', False, 'Print the resolved config and exit.')
_EXTEND = flags.DEFINE_bool('extend', False, 'Resume the workdir under other values of keys that define its run '
                            '(train.epochs, say); each change is recorded in metrics.jsonl.')
_DISTRIBUTED = cli.define_distributed_flags()


def run(argv):
  del argv
  config = cli.config_from_flag(_CONFIG)
  trainer = training.trainer(config.trainer)
  experiments.report_module(config)  # a trainer without a report is refused before any work
  # No JAX backend exists yet (modules are only imported), so the CPU can still be prepared for it.
  process.prepare_cpu(cores=trainer.CPU_DEVICES)
  if _SHOW_CONFIG.value:
    print(config)
    return
  cli.start_distributed(_DISTRIBUTED, config)
  if distributed.is_main():  # the log says what ran (config.json in the workdir holds the same)
    print('config (resolved):\n' + textwrap.indent(str(config), '  '), end='', flush=True)
  results = trainer.train_and_evaluate(config, _WORKDIR.value, extend=_EXTEND.value)
  if results is not None:  # process 0, and the run finished
    print(report.render(config, _WORKDIR.value))


if __name__ == '__main__':
  cli.main(run)
