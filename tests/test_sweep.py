"""The sweep launcher: grids, skipping finished runs, and the summary table and figure."""
import csv
import os
import subprocess
import sys

import pytest

from experiments import sweep
from tests.test_cli import ROOT


def test_grid_is_the_product_of_its_axes():
  runs = sweep.grid_runs(['model.pool=max,sum', 'model.dense=128,256:128'])
  assert [name for name, _ in runs] == ['pool=max_dense=128', 'pool=max_dense=256:128', 'pool=sum_dense=128',
                                        'pool=sum_dense=256:128']
  assert runs[1][1] == {'model.pool': 'max', 'model.dense': '256,128'}
  assert sweep.grid_runs([]) == [('default', {})]
  with pytest.raises(sweep.SweepError, match='KEY=V1,V2'):
    sweep.grid_runs(['model.pool'])


def test_sweep_file_and_dry_run(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--sweep=experiments/fashion_mnist_ablations.py:cnn',
                         f'--workdir={tmp_path}', '--dry_run'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stdout.splitlines() if 'train.py' in l]
  assert len(lines) == 6 and all('--config.train.epochs=4' in l for l in lines)
  assert any('--config.model.pool=sum' in l for l in lines)
  assert not os.path.exists(tmp_path / 'sweep.csv')


def test_sweep_runs_summarises_and_skips_finished_runs(fashion_mnist_tfds, tmp_path):
  cmd = [sys.executable, '-m', 'experiments.sweep', '--config=experiments/fashion_mnist.py:mlp,quick',
         f'--workdir={tmp_path}', '--grid=model.dense=32,64', '--seeds=0',
         f'--set=data.tfds_dir={fashion_mnist_tfds}', '--set=data.num_train=256', '--set=data.num_test=200',
         '--set=train.batch_size=64', '--set=train.epochs=1']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # the devices a user's runs get
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / 'sweep.csv')))
  assert [r['name'] for r in rows] == ['dense=32', 'dense=64']
  assert all(0 <= float(r['test_accuracy']) <= 1 and r['params_sha256'] for r in rows)
  assert int(rows[0]['num_params']) < int(rows[1]['num_params'])
  assert '| dense=64 | `model.dense=64` |' in open(tmp_path / 'sweep.md').read()
  assert os.path.getsize(tmp_path / 'sweep.png') > 0
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and 'train.py' not in again.stdout, 'finished runs are skipped'
