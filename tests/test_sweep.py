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


def test_sweep_runs_in_parallel_summarises_and_skips_finished_runs(fashion_mnist_tfds, tmp_path):
  cmd = [sys.executable, '-m', 'experiments.sweep', '--config=experiments/fashion_mnist.py:mlp,quick',
         f'--workdir={tmp_path}', '--grid=train.learning_rate=0.001,0.003', '--seeds=0,1', '--parallel=2',
         f'--set=data.tfds_dir={fashion_mnist_tfds}', '--set=data.num_train=256', '--set=data.num_test=200',
         '--set=train.batch_size=64', '--set=train.epochs=1']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # the devices a user's runs get
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / 'sweep.csv')))
  assert [(r['name'], r['seed']) for r in rows] == [('learning_rate=0.001', '0'), ('learning_rate=0.001', '1'),
                                                    ('learning_rate=0.003', '0'), ('learning_rate=0.003', '1')]
  assert all(0 <= float(r['test_accuracy']) <= 1 and r['params_sha256'] for r in rows)
  assert rows[0]['params_sha256'] != rows[1]['params_sha256'], 'seeds differ'
  assert os.path.getsize(tmp_path / 'learning_rate=0.001' / 'seed_1' / 'train.log') > 0
  md = open(tmp_path / 'sweep.md').read()
  assert '| learning_rate=0.003 | `train.learning_rate=0.003` |' in md and '| 2 |' in md
  assert os.path.getsize(tmp_path / 'sweep.png') > 0
  assert os.path.getsize(tmp_path / 'sweep_learning_rate.png') > 0, 'a numeric axis is plotted against its values'
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and 'train.py' not in again.stdout, 'finished runs are skipped'


def test_slurm_array_holds_one_task_per_unfinished_run(tmp_path):
  done = tmp_path / 'pool=max' / 'seed_0'
  os.makedirs(done)
  (done / 'results.json').write_text('{}')
  script = tmp_path / 'sweep.sbatch'
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--config=experiments/fashion_mnist.py:cnn',
                         f'--workdir={tmp_path}', '--grid=model.pool=max,sum', '--seeds=0,1', '--parallel=2',
                         f'--slurm_array={script}', '--slurm_option=--gres=gpu:1'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and '3 array tasks' in proc.stdout, proc.stderr[-2000:]
  text = script.read_text()
  assert '#SBATCH --array=0-2%2' in text and '#SBATCH --gres=gpu:1' in text
  tasks = [l for l in text.splitlines() if 'train.py' in l]
  assert len(tasks) == 3 and not any("pool=max/seed_0'" in t for t in tasks)
  check = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True)
  assert check.returncode == 0, check.stderr


def test_bad_parallel_gets_one_line(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--config=experiments/fashion_mnist.py:cnn',
                         f'--workdir={tmp_path}', '--parallel=0'], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip() == 'error: --parallel must be >= 1, got 0'
