"""Where the default hidden-units run's time goes: train.py's whole run, split into its phases from what the run
records, in one process on this machine.

  python benchmarks/hidden_units_time.py [--config=experiments/hidden_units.py] [--cached]

Phases: Python, JAX and the trainer starting (train.py's wall time less the trainer's), per compiled program (one
per depth and padded width) its first epoch (compilation included) and its other epochs (metrics.jsonl's
per-epoch rates), writing the arrays and results, and the report (claims, tables, figures: the rest of the wall
time). Every program is compiled (COMPILATION_CACHE=0), as on a first run; --cached lets the run load what the
persistent compilation cache holds instead. The last line is one JSON object.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='experiments/hidden_units.py')
  p.add_argument('--cached', action='store_true', help='load compiled programs from the compilation cache')
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'run')
    start = time.perf_counter()
    env = {**os.environ, 'COMPILATION_CACHE': '1' if args.cached else '0'}
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
    print(f'  {name:24s} first epoch (with compilation) {g["first_epoch_s"]:6.2f} s, other epochs '
          f'{g["other_epochs_s"]:6.2f} s')
  print(f'  trainer, outside the epochs (data, writing): {out["trainer_other_s"]} s')
  print(f'  start-up (Python, JAX, configs) and the report (claims, figures): {out["start_and_report_s"]} s')
  print(json.dumps(out))


if __name__ == '__main__':
  main()
