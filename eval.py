"""Evaluates a trained workdir: python eval.py --config=experiments/NAME.py[:ARGS] --workdir=DIR.

The config must be the one the workdir was trained with (its config.json); the trainer's `evaluate_workdir` re-reads
the saved parameters, evaluates them and writes eval.json into the workdir. For hidden_units, --fresh_points=N
evaluates on N newly drawn points per task instead of the test split; for checkpointed experiments --step=N picks
the checkpoint (default: the latest), and --ensemble=DIR2,DIR3,... averages the predictions of the latest
checkpoints of more workdirs trained with the same model (the AlexNet paper's five-model row).
"""
import os

from trainnets import tf_host

tf_host.quiet()  # before anything imports TensorFlow

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import experiments  # noqa: E402
from experiments import report  # noqa: E402
from trainnets import training  # noqa: E402
from trainnets.errors import ConfigError  # noqa: E402
from trainnets.errors import WorkdirError  # noqa: E402
from trainnets.training import cli  # noqa: E402
from trainnets.training import process  # noqa: E402
from trainnets.training import workdir as workdir_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'The experiment config the workdir was trained with.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
_FRESH = flags.DEFINE_integer('fresh_points', 0, 'hidden_units: evaluate on this many new points per task.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpointed experiments: the step to evaluate (default: the latest).')
_DISTRIBUTED = cli.define_distributed_flags()
_ENSEMBLE = flags.DEFINE_list('ensemble', [], 'Classifiers: more workdirs whose latest checkpoints are averaged in.')


def run(argv):
  del argv
  config = cli.config_from_flag(_CONFIG)
  trainer = training.trainer(config.trainer)
  experiments.report_module(config)  # a trainer without a report is refused before any work
  # No JAX backend exists yet (modules are only imported), so the CPU can still be prepared for it.
  process.prepare_cpu(cores=trainer.CPU_DEVICES)
  cli.start_distributed(_DISTRIBUTED, config)
  workdir = _WORKDIR.value
  if not workdir or not os.path.isdir(workdir) or not os.listdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is missing or empty; pass a workdir that train.py wrote')
  workdir_lib.check_matches(workdir, config)
  kw = {}
  if _ENSEMBLE.value:
    if config.trainer != 'classifier':
      raise ConfigError(f'--ensemble applies to the classifier trainer, not {config.trainer}')
    for d in _ENSEMBLE.value:
      if not os.path.isdir(d) or not os.listdir(d):
        raise WorkdirError(f'--ensemble member {d} is missing or empty; pass workdirs that train.py wrote')
      workdir_lib.check_matches(d, config, sections=('model', 'data'), role='--ensemble member',
                                fix='an ensemble averages members that differ only in their seed and training: drop '
                                    'it from --ensemble, or pass members trained with this --config')
    kw['ensemble'] = tuple(_ENSEMBLE.value)
  out = trainer.evaluate_workdir(config, workdir, step=_STEP.value, fresh_points=_FRESH.value, **kw)
  if out is not None:  # process 0: eval.json is written
    if config.trainer == 'classifier':  # its results.md gains the evaluation section and the confusion matrix
      report.render(config, workdir)
    print(experiments.report_module(config).evaluation_summary(out))


if __name__ == '__main__':
  cli.main(run)
