"""Sweeps: many runs of one experiment that differ in config overrides, and one table and figure of them all.

  python -m experiments.sweep --config=experiments/fashion_mnist.py:mlp --workdir=workdirs/sweep_mlp \
      --grid=model.dense=128:256,128:256:256 --grid=train.learning_rate=0.001,0.0003 --seeds=0,1 [--parallel=2]
  python -m experiments.sweep --sweep=experiments/fashion_mnist_ablations.py:cnn --workdir=workdirs/abl_cnn
  python -m experiments.sweep ... --slurm_array=sweep.sbatch [--slurm_option=--gres=gpu:1]   # then: sbatch it

A grid is the product of its --grid axes (`key=v1,v2,...`; a tuple value is written with ':' between items) and
--seeds. A sweep file instead lists named runs: its `get_sweep(arg)` returns {'config': ..., 'runs': [(name, {key:
value}), ...], 'seeds': [...], 'common': {key: value}}. Each run is `train.py` in its own process and workdir
DIR/NAME/seed_S, so a finished run is skipped and an interrupted one resumes from its checkpoint when the sweep is
started again; where the trainer can train several runs in one process (hidden units), the unfinished runs go to
`train.py --runs=DIR/batch-K.json` instead, one process per --parallel slot, sharing compiled programs
(docs/sweeps.md; --separate keeps one process per run). Runs go one after another, or --parallel=N at a time (each
logging to its workdir's train.log), or into a SLURM array job (--slurm_array=PATH writes it; one array task per
unfinished run, at most --parallel at once). When every run is done, DIR/sweep.csv, DIR/sweep.md and DIR/sweep.png
hold each run's results.json figures and the mean and spread over seeds of each setting; a grid with one numeric
axis is also plotted as the metric against that value (DIR/sweep_<key>.png).

Before any run starts, every run's config is resolved exactly as train.py would resolve it (a misspelled key or a
bad value stops the sweep in one line), and --metric is checked against what the experiment's results offer. A
run counts as finished only if its workdir's config.json equals that config: a workdir holding another config
(the sweep's command changed since it ran) stops the sweep in one line naming the differing keys, unless
--move_changed moves such workdirs aside (to NAME/seed_S.replaced-N) and reruns them.
"""
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import flags

import experiments
from experiments.reports import sweep as sweep_report
from trainnets.errors import ConfigError
from trainnets.errors import Interrupted
from trainnets.errors import SweepError
from trainnets.errors import WorkdirError
from trainnets.training import cli
from trainnets.training import workdir as workdir_lib

_CONFIG = flags.DEFINE_string('config', None, 'Experiment config, as for train.py (with a grid).')
_SWEEP = flags.DEFINE_string('sweep', None, 'A sweep file PATH[:ARG] defining get_sweep(arg).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one workdir per run and the summary.')
_GRID = flags.DEFINE_multi_string('grid', [], 'An axis of the grid: KEY=V1,V2,... (tuples as A:B:C).')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds; each setting runs once per seed.')
_SET = flags.DEFINE_multi_string('set', [], 'KEY=VALUE overrides shared by every run.')
_METRIC = flags.DEFINE_string('metric', None, 'The figure to summarise and plot (default: the experiment\'s own, '
                              'e.g. test_accuracy or claims_holding).')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at once (local processes, or SLURM array tasks).')
_SLURM_ARRAY = flags.DEFINE_string('slurm_array', None, 'Write a SLURM array job of the unfinished runs here.')
_SLURM_OPTION = flags.DEFINE_multi_string('slurm_option', [], 'An #SBATCH option for each array task, e.g. '
                                          '--gres=gpu:1 or --time=4:00:00.')
_SEPARATE = flags.DEFINE_bool('separate', False, 'One process per run, even where the trainer can train several '
                              'runs in one process (hidden units): the way to time or debug a run on its own.')
_MOVE_CHANGED = flags.DEFINE_bool('move_changed', False, 'Move run workdirs that hold another config aside '
                                  '(NAME/seed_S.replaced-N) and run them again, instead of stopping.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _value(text):
  """A command-line value as the config override flag takes it (tuples written A:B:C become A,B,C)."""
  return text.replace(':', ',') if ':' in text else text


def grid_runs(axes):
  """[(name, {key: value})] for the product of axes 'KEY=V1,V2'."""
  parsed = []
  for axis in axes:
    key, sep, values = axis.partition('=')
    if not sep or not values:
      raise SweepError(f'--grid={axis} is not KEY=V1,V2,...; for example --grid=model.pool=max,sum')
    parsed.append((key, values.split(',')))
  runs = []
  for combo in itertools.product(*[[(k, v) for v in vs] for k, vs in parsed]):
    name = '_'.join(f'{k.split(".")[-1]}={v}' for k, v in combo) or 'default'
    runs.append((name, {k: _value(v) for k, v in combo}))
  return runs


def load_sweep(spec):
  path, _, arg = spec.partition(':')
  path = cli.config_path(path)  # as train.py finds a config: from the working directory, else the project's
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path} does not exist')
  cli.check_python_file(path, '--sweep')
  try:
    return cli.load_python_file(path, 'sweep_file').get_sweep(arg)
  except (AttributeError, TypeError, ValueError) as e:
    raise SweepError(f'--sweep={spec}: {e}') from None


def command(config, workdir, overrides):
  return [sys.executable, os.path.join(ROOT, 'train.py'), f'--config={config}', f'--workdir={workdir}',
          *[f'--config.{k}={v}' for k, v in overrides.items()]]


def plan(config, runs, seeds, common, workdir):
  """The table of every (run, seed): name, seed, workdir, overrides, the resolved config, command, and its
  state: 'done' (results.json beside a config.json of this very config), 'todo' (nothing there, or an
  unfinished run of this config, which resumes), 'changed' (the workdir holds another config) or 'damaged' (it
  holds this config, but a file that a resume reads cannot be read)."""
  table = []
  for (name, overrides), seed in itertools.product(runs, seeds):
    run_dir = os.path.join(workdir, name, f'seed_{seed}')
    every = {**common, **overrides, 'seed': seed}
    resolved = cli.load_config(config, every)
    try:
      if os.path.exists(os.path.join(run_dir, workdir_lib.CONFIG_FILE)):
        workdir_lib.check_matches(run_dir, resolved)
    except WorkdirError as e:
      state, why = 'changed', str(e)
    else:
      try:
        workdir_lib.check_usable(run_dir, resolved)
        done = os.path.exists(os.path.join(run_dir, workdir_lib.CONFIG_FILE)) and os.path.exists(
            os.path.join(run_dir, 'results.json'))
        state, why = ('done' if done else 'todo'), None
      except WorkdirError as e:
        state, why = 'damaged', str(e)
    table.append({'name': name, 'seed': seed, 'workdir': run_dir, 'overrides': overrides, 'config': resolved,
                  'every': every, 'command': command(config, run_dir, every), 'state': state, 'why': why})
  return table


def batches(config, pending, parallel, workdir, separate=False):
  """The pending runs as jobs for run_local: where the experiment's trainer trains several runs in one process
  (train_and_evaluate_many), runs whose programs can be shared (its program_key) go to the same process, in at
  most `parallel` processes; otherwise, or with `separate`, one process per run. A job is {'command', 'log',
  'runs'}; a batch's runs file is DIR/batch-K.json."""
  from trainnets import training  # noqa: PLC0415 (imports JAX, only once the sweep's flags are sound)

  trainer = training.trainer(pending[0]['config'].trainer) if pending else None
  if separate or len(pending) < 2 or not hasattr(trainer, 'train_and_evaluate_many'):
    return [{'command': r['command'], 'log': os.path.join(r['workdir'], 'train.log'), 'runs': [r]} for r in pending]
  shared = {}
  for r in pending:
    shared.setdefault(trainer.program_key(r['config']), []).append(r)
  count = min(parallel, len(shared))
  jobs = [[] for _ in range(count)]
  for i, runs in enumerate(sorted(shared.values(), key=len, reverse=True)):
    jobs[i % count] += runs
  out = []
  order = {id(r): i for i, r in enumerate(pending)}
  for k, job in enumerate(jobs):
    runs = sorted(job, key=lambda r: order[id(r)])  # each process's runs in the sweep's order
    path = os.path.join(workdir, f'batch-{k}.json')
    out.append({'command': [sys.executable, os.path.join(ROOT, 'train.py'), f'--runs={path}'], 'path': path,
                'spec': {'config': config, 'runs': [{'workdir': r['workdir'], 'overrides': r['every']} for r in runs]},
                'log': os.path.join(workdir, f'batch-{k}.log'), 'runs': runs})
  return out


def move_aside(run):
  """Renames a run's workdir to the first free NAME.replaced-N; returns the new path."""
  n = 1
  while os.path.exists(f'{run["workdir"]}.replaced-{n}'):
    n += 1
  target = f'{run["workdir"]}.replaced-{n}'
  os.rename(run['workdir'], target)
  return target


def check_values(table):
  """Every run's config checked by its trainer's validate before any run starts: a bad value in the grid (a
  negative learning rate) is one line naming the run, not one refusal printed per run."""
  from trainnets import training  # noqa: PLC0415 (the trainers import JAX: only once the flags are known to be sound)

  for r in table:
    try:
      training.trainer(r['config'].trainer).validate(r['config'])
    except ConfigError as e:
      raise ConfigError(f'run {r["name"]} (seed {r["seed"]}): {e}') from None


def check_metric(config, metric):
  """`metric`, or the experiment's default; a ConfigError unless the experiment's runs offer it (its report's
  sweep_metrics, known from the config before any run)."""
  report = experiments.report_module(config)
  metric = metric or report.sweep_metric(config)
  offered = report.sweep_metrics(config)
  if metric not in offered:
    listed = report.describe_metrics(config) if hasattr(report, 'describe_metrics') else ', '.join(offered)
    raise ConfigError(f'--metric={metric} is not a figure of {config.experiment}\'s results; choose one of {listed}')
  return metric


def run_local(jobs, parallel):
  """Runs the jobs (batches), `parallel` at a time, the next starting as soon as any slot frees (each with its
  output in its log file when parallel > 1); returns the failed runs [(run, exit status)]: a job's runs that
  wrote no results.json.

  SIGTERM (a scheduler's pre-emption) is passed on to the running runs, which save a checkpoint and exit; a
  Ctrl-C reaches them from the terminal. Either way no further run starts, the sweep waits for the running ones
  to finish saving, and stops with an Interrupted error: the same command resumes every run."""
  failed, running, queue = [], [], list(jobs)
  stop = {'signal': None}

  def on_signal(signum, frame):
    del frame
    stop['signal'] = signum
    if signum == signal.SIGTERM:
      for _, proc, _ in running:
        proc.send_signal(signum)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while (queue and stop['signal'] is None) or running:
      while queue and len(running) < parallel and stop['signal'] is None:
        job = queue.pop(0)
        if 'path' in job:  # several runs in one process
          workdir_lib.write_json(job['path'], job['spec'])
          print(f'{len(job["runs"])} runs in one process, each the same as alone:', flush=True)
          for r in job['runs']:
            print('  ' + ' '.join(r['command']), flush=True)
        print(' '.join(job['command']), flush=True)
        if parallel == 1:
          log = None
        else:
          os.makedirs(os.path.dirname(job['log']), exist_ok=True)
          log = open(job['log'], 'a')
        running.append((job, subprocess.Popen(job['command'], stdout=log, stderr=log), log))
      done = [job for job in running if job[1].poll() is not None]
      if not done:
        time.sleep(0.1)
      for entry in done:
        running.remove(entry)
        job, proc, log = entry
        if proc.returncode and stop['signal'] is None:
          failed += [(r, proc.returncode) for r in job['runs']
                     if len(job['runs']) == 1 or not os.path.exists(os.path.join(r['workdir'], 'results.json'))]
        if log:
          log.close()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stop['signal'] is not None:
    raise Interrupted(f'{signal.Signals(stop["signal"]).name}: the running runs saved their checkpoints and no '
                      'other run started; run the same sweep command to resume')
  return failed


def slurm_array_script(pending, parallel, options):
  """A SLURM batch script with one array task per pending run."""
  lines = ['#!/bin/bash', '# Written by experiments/sweep.py: one array task per unfinished run. Submit with sbatch;',
           '# when the array has finished, run the same sweep command again to summarise (finished runs are skipped).',
           '#SBATCH --job-name=sweep', f'#SBATCH --array=0-{len(pending) - 1}%{max(1, parallel)}',
           '#SBATCH --output=slurm-%A_%a.out',
           '# two minutes before a time limit: the run saves (SIGTERM), then the task is requeued and resumes',
           '#SBATCH --signal=B:USR1@120', '#SBATCH --requeue', *[f'#SBATCH {o}' for o in options],
           'set -euo pipefail',
           f'cd {shlex.quote(os.getcwd())}  # where the sweep was planned: its relative paths start here', 'RUNS=(']
  lines += [f'  {shlex.quote(shlex.join(r["command"]))}' for r in pending]
  lines += [')', f'source {shlex.quote(os.path.join(ROOT, "scripts", "run_requeueable.sh"))}  # before a time limit: '
            'the run saves, the task is requeued',
            'eval "run_requeueable \\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\\" ${RUNS[$SLURM_ARRAY_TASK_ID]}"']
  return '\n'.join(lines) + '\n'


def parse_seeds(values):
  try:
    return [int(v) for v in values]
  except ValueError:
    raise SweepError(f'--seeds={",".join(values)} must be whole numbers, e.g. --seeds=0,1,2') from None


def parse_sets(values):
  common = {}
  for s in values:
    key, sep, value = s.partition('=')
    if not sep or not key:
      raise SweepError(f'--set={s} is not KEY=VALUE; for example --set=train.epochs=4')
    common[key] = value
  return common


def main(argv):
  del argv  # cli.parse_flags refuses stray arguments
  if not _WORKDIR.value:
    raise SweepError('pass --workdir=DIR for the sweep\'s runs and summary')
  if bool(_CONFIG.value) == bool(_SWEEP.value):
    raise SweepError('pass exactly one of --config (with --grid) and --sweep')
  common = parse_sets(_SET.value)
  if _SWEEP.value:
    spec = load_sweep(_SWEEP.value)
    config, runs, seeds = spec['config'], spec['runs'], spec.get('seeds', [0])
    common = {**spec.get('common', {}), **common}
  else:
    config, runs, seeds = _CONFIG.value, grid_runs(_GRID.value), parse_seeds(_SEEDS.value)
  if _PARALLEL.value < 1:
    raise SweepError(f'--parallel must be >= 1, got {_PARALLEL.value}')
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    raise SweepError(f'--workdir={_WORKDIR.value} is a file, not a directory')
  table = plan(config, runs, seeds, common, _WORKDIR.value)  # every run's config resolved: nothing written yet
  check_values(table)
  metric = check_metric(table[0]['config'], _METRIC.value)
  damaged = [r for r in table if r['state'] == 'damaged']
  if damaged:
    raise SweepError(f'{len(damaged)} run workdir(s) of this sweep are damaged, e.g. run {damaged[0]["name"]} seed '
                     f'{damaged[0]["seed"]}: {damaged[0]["why"]}')
  changed = [r for r in table if r['state'] == 'changed']
  if changed and not _MOVE_CHANGED.value:
    raise SweepError(f'{len(changed)} run workdir(s) hold something other than what this sweep would run, e.g. '
                     f'{changed[0]["why"]}; pass --move_changed to move them aside and run them again, or a new '
                     '--workdir')
  pending = [r for r in table if r['state'] != 'done']
  jobs = batches(config, pending, _PARALLEL.value, _WORKDIR.value, _SEPARATE.value)
  if _DRY_RUN.value:
    for job in jobs:
      if 'path' in job:
        print(f'# these {len(job["runs"])} runs train in one process ({" ".join(job["command"])}); each line is the '
              'same run alone')
      for r in job['runs']:
        print(('(moved aside first) ' if r['state'] == 'changed' else '') + ' '.join(r['command']))
    return
  os.makedirs(_WORKDIR.value, exist_ok=True)
  workdir_lib.lock(_WORKDIR.value)  # one sweep at a time in this directory
  for r in changed:
    print(f'moved {r["workdir"]} aside to {move_aside(r)}', flush=True)
  if _SLURM_ARRAY.value:
    if not pending:
      print('every run has finished; nothing to submit')
    else:
      workdir_lib.write_text(_SLURM_ARRAY.value, slurm_array_script(pending, _PARALLEL.value, _SLURM_OPTION.value))
      print(f'wrote {_SLURM_ARRAY.value}: {len(pending)} array tasks, at most {_PARALLEL.value} at once; submit '
            f'with `sbatch {_SLURM_ARRAY.value}`, then run this command again to summarise')
      return
  else:
    failed = run_local(jobs, _PARALLEL.value)
    if failed:
      raise SweepError(f'{len(failed)} of {len(pending)} runs failed (' + ', '.join(
          f'{r["name"]} seed {r["seed"]}: exit {code}' for r, code in failed[:3]) + '); see their output or '
          'train.log, fix and start the sweep again: finished runs are kept')
  print(sweep_report.summarise(table, _WORKDIR.value, metric, experiments.report_module(table[0]['config'])))


if __name__ == '__main__':
  cli.main(main)
