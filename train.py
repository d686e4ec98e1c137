"""Trains an experiment: python train.py --config=experiments/NAME.py[:ARGS] --workdir=DIR [--config.KEY=VALUE].

The config names its trainer (config.trainer: a module of trainnets/training/) and so its report (experiments/reports/);
the trainer writes config.json, metrics.jsonl and results.json into the workdir, then the report renders results.md
and figures/ from them (experiments/report.py, which redraws a finished workdir alone). A trainer of several runs at
once (train_and_evaluate_many) hands each run over in memory as it is trained: its report starts from that, its
figures drawn while its files are written.
See README.md for every experiment's command. `python train.py --runs=FILE` trains several runs in one process
where the trainer can (hidden units: docs/sweeps.md).
"""
from trainnets import tf_host

tf_host.quiet()  # before anything imports TensorFlow

import json  # noqa: E402
import os  # noqa: E402
import textwrap  # noqa: E402

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import experiments  # noqa: E402
from experiments import report  # noqa: E402
from trainnets import training  # noqa: E402
from trainnets.errors import ConfigError  # noqa: E402
from trainnets.training import cli  # noqa: E402
from trainnets.training import distributed  # noqa: E402
from trainnets.training import process  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. '
                                          'experiments/hidden_units.py:quick', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for this run\'s config, metrics, results and figures.')
_SHOW_CONFIG = flags.DEFINE_bool('show_config', False, 'Print the resolved config and exit.')
_EXTEND = flags.DEFINE_bool('extend', False, 'Resume the workdir under other values of keys that define its run '
                            '(train.epochs, say); each change is recorded in metrics.jsonl.')
_RUNS = flags.DEFINE_string('runs', None, 'Train several runs in this process, sharing compiled programs: a JSON '
                            'file {"config": PATH[:ARG], "runs": [{"workdir": DIR, "overrides": {KEY: VALUE}}, ...]}, '
                            'as experiments/sweep.py writes it (instead of --config and --workdir).')
_DISTRIBUTED = cli.define_distributed_flags()


def run_many(path):
  """--runs=FILE: its runs trained together (the trainer's train_and_evaluate_many), then each one's report."""
  if _CONFIG.value is not None or _WORKDIR.value or _EXTEND.value or _SHOW_CONFIG.value:
    raise ConfigError('--runs names every run\'s config and workdir: pass it without --config, --workdir, --extend '
                      'and --show_config')
  try:
    with open(path) as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'--runs={path} cannot be read ({getattr(e, "strerror", None) or e}); pass the JSON file of '
                      'runs experiments/sweep.py writes, or one of your own') from None
  if not (isinstance(spec, dict) and isinstance(spec.get('config'), str) and isinstance(spec.get('runs'), list)
          and spec['runs'] and all(isinstance(r, dict) and isinstance(r.get('workdir'), str) and
                                   isinstance(r.get('overrides', {}), dict) for r in spec['runs'])):
    raise ConfigError(f'--runs={path} must hold {{"config": PATH[:ARG], "runs": [{{"workdir": DIR, "overrides": '
                      '{KEY: VALUE}}, ...]}, with at least one run')
  configs = [cli.load_config(spec['config'], r.get('overrides')) for r in spec['runs']]
  trainer = training.trainer(configs[0].trainer)
  if not hasattr(trainer, 'train_and_evaluate_many'):
    raise ConfigError(f'the {configs[0].trainer} trainer trains one run per process; run each with --config and '
                      '--workdir')
  experiments.report_module(configs[0])
  process.prepare_cpu(cores=trainer.CPU_DEVICES)
  cli.check_backend()
  workdirs = [r['workdir'] for r in spec['runs']]
  print(f'{len(workdirs)} runs of {spec["config"]} trained together: {", ".join(workdirs)}', flush=True)
  train_together(trainer, list(zip(configs, workdirs)),
                 lambda workdir, lines: print(f'{workdir}:\n' + textwrap.indent(lines, '  '), flush=True))


def train_together(trainer, runs, show, extend=False):
  """Trains runs [(config, workdir)] with the trainer's train_and_evaluate_many, each run's report started as it
  is trained, from what the trainer holds in memory, so that its figures are drawn (by processes started now, on
  every core) while its files, and the next run's, are written; then `show(workdir, lines)` of each. Runs that
  finished are reported even when another failed."""
  with report.drawing(runs[0][0]) as draw:
    started = {}  # workdir -> its report's finish, or None where starting it failed (it starts again from the files)

    def trained(config, workdir, loaded):
      started[workdir] = None
      started[workdir] = report.start(config, workdir, draw, loaded)

    try:
      trainer.train_and_evaluate_many(runs, extend, trained=trained)
    finally:
      for c, workdir in runs:
        if workdir in started and os.path.exists(os.path.join(workdir, 'results.json')):
          show(workdir, (started[workdir] or report.start(c, workdir, draw))())


def run(argv):
  del argv
  if _RUNS.value is not None:
    return run_many(_RUNS.value)
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
  if hasattr(trainer, 'train_and_evaluate_many'):  # the report starts from the trained run in memory
    train_together(trainer, [(config, _WORKDIR.value)], lambda _, lines: print(lines), extend=_EXTEND.value)
    return
  with report.drawing(config) as draw:  # where the report hands its figures over, started now
    results = trainer.train_and_evaluate(config, _WORKDIR.value, extend=_EXTEND.value)
    if results is not None:  # process 0, and the run finished
      print(report.render(config, _WORKDIR.value, draw))


if __name__ == '__main__':
  cli.main(run)
