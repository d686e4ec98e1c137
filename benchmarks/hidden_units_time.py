"""Where the default hidden-units run's time goes: train.py's whole run, split into its phases from what the run
records, in one process on this machine.

  python benchmarks/hidden_units_time.py [--config=experiments/hidden_units.py] [--cached]

Phases: Python, JAX and the trainer starting (train.py's wall time less the trainer's), per compiled program (one
per depth and padded width) its first epoch and its other epochs (metrics.jsonl's per-epoch rates), the trainer
outside the epochs (drawing the data and initial parameters, waiting for a group's programs, handing the trained
run to the report, whose figures are then drawn while the arrays and results are written), and the report (claims,
tables, the rest of the figures: the rest of the wall time). The trainer compiles each group's programs in another
thread while the group before it trains, so compilation shows as that group's slower epochs, or as waiting outside
the epochs where it takes longer than they do. Every program is compiled (COMPILATION_CACHE=0), as on a first run;
--cached first runs it once, untimed, so that the persistent compilation cache holds every program, then times a
run that loads them. The last line is one JSON object.

  python benchmarks/hidden_units_time.py --sweep=experiments/hidden_units_ablations.py[:quick] [--repeats=3]

times a sweep two ways, alternately, in fresh workdirs: as the launcher runs it (the runs trained together in one
process) and with --separate (one process per run, as before runs could share a process); it reports the medians,
their ratio, and whether every run's records and saved parameters came out identical both ways.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same_runs(a, b):
  """Whether two sweep directories hold the same runs with identical records and saved parameters."""
  runs = sorted(os.path.relpath(d, a) for d, _, files in os.walk(a) if 'results.json' in files)
  if not runs or runs != sorted(os.path.relpath(d, b) for d, _, files in os.walk(b) if 'results.json' in files):
    return False
  for r in runs:
    records = [json.load(open(os.path.join(root, r, 'results.json')))['records'] for root in (a, b)]
    params = [open(os.path.join(root, r, 'params.npz'), 'rb').read() for root in (a, b)]
    if records[0] != records[1] or params[0] != params[1]:
      return False
  return True


def _prime_cache(command, workdir, env):
  """Runs `command` once, untimed, so that the compilation cache holds its programs (a run with
  COMPILATION_CACHE=0 writes nothing there)."""
  subprocess.run([*command, f'--workdir={workdir}'], cwd=ROOT, check=True, capture_output=True, env=env)
  shutil.rmtree(workdir)


def time_sweep(args):
  env = {**os.environ, 'COMPILATION_CACHE': '1' if args.cached else '0'}
  times = {'one_process': [], 'one_process_per_run': []}
  identical = True
  with tempfile.TemporaryDirectory() as tmp:
    if args.cached:  # every setting's programs, which both ways compile alike
      _prime_cache([sys.executable, '-m', 'experiments.sweep', f'--sweep={args.sweep}'], os.path.join(tmp, 'prime'),
                   env)
    for k in range(args.repeats):
      dirs = {}
      for way, extra in (('one_process_per_run', ['--separate']), ('one_process', [])):
        dirs[way] = os.path.join(tmp, f'{way}_{k}')
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--sweep={args.sweep}', f'--workdir={dirs[way]}',
                        *extra], cwd=ROOT, check=True, capture_output=True, env=env)
        times[way].append(round(time.perf_counter() - start, 2))
        print(f'{way}: {times[way][-1]} s', flush=True)
      identical = identical and _same_runs(dirs['one_process'], dirs['one_process_per_run'])
      for d in dirs.values():
        shutil.rmtree(d)
  med = {way: statistics.median(t) for way, t in times.items()}
  out = {'sweep': args.sweep, 'one_process_s': med['one_process'], 'one_process_per_run_s': med['one_process_per_run'],
         'x': round(med['one_process_per_run'] / med['one_process'], 2), 'times_s': times,
         'identical_records_and_params': identical, 'repeats': args.repeats, 'compilation_cache': args.cached,
         'cpu_count': os.cpu_count(), 'python': platform.python_version()}
  print(f'{args.sweep}: one process {out["one_process_s"]} s, one process per run {out["one_process_per_run_s"]} s '
        f'({out["x"]}x); records and parameters identical: {identical}')
  print(json.dumps(out))


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='experiments/hidden_units.py')
  p.add_argument('--cached', action='store_true', help='load compiled programs from the compilation cache')
  p.add_argument('--sweep', help='time this sweep file (PATH[:ARG]) in one process and in one process per run')
  p.add_argument('--repeats', type=int, default=3, help='with --sweep: timings of each way (medians reported)')
  args = p.parse_args()
  if args.sweep:
    return time_sweep(args)
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'run')
    env = {**os.environ, 'COMPILATION_CACHE': '1' if args.cached else '0'}
    if args.cached:
      _prime_cache([sys.executable, 'train.py', f'--config={args.config}'], os.path.join(tmp, 'prime'), env)
    start = time.perf_counter()
    subprocess.run([sys.executable, 'train.py', f'--config={args.config}', f'--workdir={workdir}'], cwd=ROOT,
                   check=True, capture_output=True, env=env)
    total = time.perf_counter() - start
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
      config = json.load(f)
    steps = config['data']['num_train'] // config['train']['batch_size']
    groups = {}
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for row in map(json.loads, f):
        if 'model_updates_per_s' not in row:
          continue
        seconds = row['models_training'] * steps / max(row['model_updates_per_s'], 1)
        g = groups.setdefault(f'depth {row["depth"]}, width <= {row["padded_width"]}', {'first_epoch_s': 0.0,
                                                                                          'other_epochs_s': 0.0})
        g['first_epoch_s' if row['epoch'] == 1 else 'other_epochs_s'] += seconds
  training = sum(g['first_epoch_s'] + g['other_epochs_s'] for g in groups.values())
  out = {'total_s': round(total, 2), 'trainer_s': results['wall_time_s'], 'train_time_s': results['train_time_s'],
         'num_models': results['num_models'],
         'groups': {k: {n: round(v, 2) for n, v in g.items()} for k, g in groups.items()},
         'first_epochs_s': round(sum(g['first_epoch_s'] for g in groups.values()), 2),
         'other_epochs_s': round(sum(g['other_epochs_s'] for g in groups.values()), 2),
         'trainer_other_s': round(results['wall_time_s'] - training, 2),
         'start_and_report_s': round(total - results['wall_time_s'], 2),
         'compilation_cache': args.cached, 'machine': results.get('machine', '')}
  print(f'train.py, start to results.md: {out["total_s"]} s; in the trainer {out["trainer_s"]} s')
  for name, g in out['groups'].items():
    print(f'  {name:24s} first epoch {g["first_epoch_s"]:6.2f} s, other epochs '
          f'{g["other_epochs_s"]:6.2f} s')
  print(f'  trainer, outside the epochs (data, initial parameters, waiting for programs, handing over, writing): '
        f'{out["trainer_other_s"]} s')
  print(f'  start-up (Python, JAX, configs) and the report (claims, figures): {out["start_and_report_s"]} s')
  print(json.dumps(out))


if __name__ == '__main__':
  main()
