"""Sweeps: many runs of one experiment that differ in config overrides, and one table and figure of them all.

  python -m experiments.sweep --config=experiments/fashion_mnist.py:mlp --workdir=workdirs/sweep_mlp \
      --grid=model.dense=128:256,128:256:256 --grid=train.learning_rate=0.001,0.0003 --seeds=0,1 [--parallel=2]
  python -m experiments.sweep --sweep=experiments/fashion_mnist_ablations.py:pooling --workdir=workdirs/abl_pool
  python -m experiments.sweep ... --slurm_array=sweep.sbatch [--slurm_option=--gres=gpu:1]   # then: sbatch it

A grid is the product of its --grid axes (`key=v1,v2,...`; a tuple value is written with ':' between items) and
--seeds. A sweep file instead lists named runs: its `get_sweep(arg)` returns {'config': ..., 'runs': [(name,
{key: value}), ...], 'seeds': [...], 'common': {key: value}}. Each run is `train.py` in its own process and
workdir DIR/NAME/seed_S, so a finished run is skipped and an interrupted one resumes from its checkpoint when the
sweep is started again. Runs go one after another, or --parallel=N at a time (each logging to its workdir's
train.log), or into a SLURM array job (--slurm_array=PATH writes it; one array task per unfinished run, at most
--parallel at once). When every run is done, DIR/sweep.csv, DIR/sweep.md and DIR/sweep.png hold each run's
results.json figures and the mean and spread over seeds of each setting; a grid with one numeric axis is also
plotted as the metric against that value (DIR/sweep_<key>.png).
"""
import csv
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string('config', None, 'Experiment config, as for train.py (with a grid).')
_SWEEP = flags.DEFINE_string('sweep', None, 'A sweep file PATH[:ARG] defining get_sweep(arg).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one workdir per run and the summary.')
_GRID = flags.DEFINE_multi_string('grid', [], 'An axis of the grid: KEY=V1,V2,... (tuples as A:B:C).')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds; each setting runs once per seed.')
_SET = flags.DEFINE_multi_string('set', [], 'KEY=VALUE overrides shared by every run.')
_METRIC = flags.DEFINE_string('metric', 'test_accuracy', 'The results.json figure to summarise and plot.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at once (local processes, or SLURM array tasks).')
_SLURM_ARRAY = flags.DEFINE_string('slurm_array', None, 'Write a SLURM array job of the unfinished runs here.')
_SLURM_OPTION = flags.DEFINE_multi_string('slurm_option', [], 'An #SBATCH option for each array task, e.g. '
                                          '--gres=gpu:1 or --time=4:00:00.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SweepError(Exception):
  pass


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
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path} does not exist')
  module_spec = importlib.util.spec_from_file_location('sweep_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_sweep(arg)


def command(config, workdir, overrides):
  return [sys.executable, os.path.join(ROOT, 'train.py'), f'--config={config}', f'--workdir={workdir}',
          *[f'--config.{k}={v}' for k, v in overrides.items()]]


def plan(config, runs, seeds, common, workdir):
  """The table of every (run, seed): name, seed, workdir, overrides, command, and whether it has finished."""
  table = []
  for (name, overrides), seed in itertools.product(runs, seeds):
    run_dir = os.path.join(workdir, name, f'seed_{seed}')
    table.append({'name': name, 'seed': seed, 'workdir': run_dir, 'overrides': overrides,
                  'command': command(config, run_dir, {**common, **overrides, 'seed': seed}),
                  'done': os.path.exists(os.path.join(run_dir, 'results.json'))})
  return table


def run_local(pending, parallel):
  """Runs the pending runs, `parallel` at a time (each with its output in its workdir's train.log when
  parallel > 1); returns the failed ones."""
  failed, running, queue = [], [], list(pending)
  while queue or running:
    while queue and len(running) < parallel:
      r = queue.pop(0)
      print(' '.join(r['command']), flush=True)
      if parallel == 1:
        log = None
      else:
        os.makedirs(r['workdir'], exist_ok=True)
        log = open(os.path.join(r['workdir'], 'train.log'), 'a')
      running.append((r, subprocess.Popen(r['command'], cwd=ROOT, stdout=log, stderr=log), log))
    r, proc, log = running.pop(0)
    if proc.wait():
      failed.append((r, proc.returncode))
    if log:
      log.close()
  return failed


def slurm_array_script(pending, parallel, options):
  """A SLURM batch script with one array task per pending run."""
  lines = ['#!/bin/bash', '# Written by experiments/sweep.py: one array task per unfinished run. Submit with sbatch;',
           '# when the array has finished, run the same sweep command again to summarise (finished runs are skipped).',
           '#SBATCH --job-name=sweep', f'#SBATCH --array=0-{len(pending) - 1}%{max(1, parallel)}',
           '#SBATCH --output=slurm-%A_%a.out', *[f'#SBATCH {o}' for o in options], 'set -euo pipefail',
           f'cd {shlex.quote(ROOT)}', 'RUNS=(']
  lines += [f'  {shlex.quote(shlex.join(r["command"]))}' for r in pending]
  lines += [')', 'eval "${RUNS[$SLURM_ARRAY_TASK_ID]}"']
  return '\n'.join(lines) + '\n'


def summarise(table, workdir, metric):
  """Writes sweep.csv (one row per run), sweep.md (mean and spread per setting) and sweep.png."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  rows = []
  for r in table:
    with open(os.path.join(r['workdir'], 'results.json')) as f:
      res = json.load(f)
    rows.append({'name': r['name'], 'seed': r['seed'], **{f'config.{k}': v for k, v in r['overrides'].items()},
                 **{k: v for k, v in res.items() if isinstance(v, (int, float, str)) and k != 'experiment'}})
  keys = list(dict.fromkeys(k for row in rows for k in row))
  with open(os.path.join(workdir, 'sweep.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  names = list(dict.fromkeys(r['name'] for r in rows))
  values = {n: [r[metric] for r in rows if r['name'] == n] for n in names}
  lines = [f'| setting | overrides | {metric} (mean) | min | max | seeds | wall time (s) |',
           '|---|---|---|---|---|---|---|']
  for n in names:
    over = next(r['overrides'] for r in table if r['name'] == n)
    walls = [r.get('wall_time_s', float('nan')) for r in rows if r['name'] == n]
    v = values[n]
    lines.append(f'| {n} | {", ".join(f"`{k}={x}`" for k, x in over.items()) or "(defaults)"} | '
                 f'{np.mean(v):.4f} | {min(v):.4f} | {max(v):.4f} | {len(v)} | {np.mean(walls):.0f} |')
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names) + 1), 3.6))
  means = [np.mean(values[n]) for n in names]
  ax.bar(range(len(names)), means, color='#6baed6')
  for i, n in enumerate(names):
    ax.plot([i] * len(values[n]), values[n], 'k.', ms=5)
  lo = min(min(v) for v in values.values())
  ax.set(xticks=range(len(names)), ylabel=metric, ylim=(max(0.0, lo - 0.02), min(1.0, max(means) + 0.01)))
  ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
  for i, m in enumerate(means):
    ax.text(i, m, f'{m:.4f}', ha='center', va='bottom', fontsize=7)
  fig.savefig(os.path.join(workdir, 'sweep.png'), dpi=110, bbox_inches='tight')
  plt.close(fig)
  axis = numeric_axis(table)
  if axis:
    xs = sorted({float(r['overrides'][axis]) for r in table})
    per_x = [[r[metric] for r, t in zip(rows, table) if float(t['overrides'][axis]) == x] for x in xs]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(xs, [np.mean(v) for v in per_x], 'o-', label=f'mean over {max(len(v) for v in per_x)} seeds')
    ax.fill_between(xs, [min(v) for v in per_x], [max(v) for v in per_x], alpha=0.25, label='min to max')
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
      ax.set_xscale('log')
    ax.set(xlabel=axis, ylabel=metric)
    ax.legend(fontsize=8)
    fig.savefig(os.path.join(workdir, f'sweep_{axis.split(".")[-1]}.png'), dpi=110, bbox_inches='tight')
    plt.close(fig)
  return '\n'.join(lines)


def numeric_axis(table):
  """The one overridden key whose values are all numbers and that takes several values, if there is one."""
  keys = {k for r in table for k in r['overrides']}
  if len(keys) != 1:
    return None
  key = keys.pop()
  try:
    values = {float(r['overrides'][key]) for r in table}
  except (TypeError, ValueError):
    return None
  return key if len(values) > 1 else None


def main(argv):
  if len(argv) > 1:
    raise SweepError(f'unexpected arguments {argv[1:]}')
  if not _WORKDIR.value:
    raise SweepError('pass --workdir=DIR for the sweep\'s runs and summary')
  if bool(_CONFIG.value) == bool(_SWEEP.value):
    raise SweepError('pass exactly one of --config (with --grid) and --sweep')
  common = dict(s.split('=', 1) for s in _SET.value)
  if _SWEEP.value:
    spec = load_sweep(_SWEEP.value)
    config, runs, seeds = spec['config'], spec['runs'], spec.get('seeds', [0])
    common = {**spec.get('common', {}), **common}
  else:
    config, runs, seeds = _CONFIG.value, grid_runs(_GRID.value), [int(s) for s in _SEEDS.value]
  if _PARALLEL.value < 1:
    raise SweepError(f'--parallel must be >= 1, got {_PARALLEL.value}')
  os.makedirs(_WORKDIR.value, exist_ok=True)
  table = plan(config, runs, seeds, common, _WORKDIR.value)
  pending = [r for r in table if not r['done']]
  if _SLURM_ARRAY.value:
    if not pending:
      print('every run has finished; nothing to submit')
    else:
      with open(_SLURM_ARRAY.value, 'w') as f:
        f.write(slurm_array_script(pending, _PARALLEL.value, _SLURM_OPTION.value))
      print(f'wrote {_SLURM_ARRAY.value}: {len(pending)} array tasks, at most {_PARALLEL.value} at once; submit '
            f'with `sbatch {_SLURM_ARRAY.value}`, then run this command again to summarise')
      return
  elif _DRY_RUN.value:
    for r in pending:
      print(' '.join(r['command']))
    return
  else:
    failed = run_local(pending, _PARALLEL.value)
    if failed:
      raise SweepError(f'{len(failed)} of {len(pending)} runs failed (' + ', '.join(
          f'{r["name"]} seed {r["seed"]}: exit {code}' for r, code in failed[:3]) + '); see their output or '
          'train.log, fix and start the sweep again: finished runs are kept')
  print(summarise(table, _WORKDIR.value, _METRIC.value))


if __name__ == '__main__':

  def guarded(argv):
    try:
      main(argv)
    except SweepError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
