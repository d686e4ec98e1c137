"""The sweep launcher: grids, skipping finished runs, and the summary table and figure."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from experiments import sweep
from experiments.reports import sweep as sweep_report
from tests.helpers import assert_one_line_error
from tests.helpers import message_lines
from tests.helpers import ROOT
from trainnets.training import cli
from trainnets.training import workdir as workdir_lib


def test_grid_is_the_product_of_its_axes():
  runs = sweep.grid_runs(['model.pool=max,sum', 'model.dense=128,256:128'])
  assert [name for name, _ in runs] == ['pool=max_dense=128', 'pool=max_dense=256:128', 'pool=sum_dense=128',
                                        'pool=sum_dense=256:128']
  assert runs[1][1] == {'model.pool': 'max', 'model.dense': '256,128'}
  assert sweep.grid_runs([]) == [('default', {})]
  with pytest.raises(sweep.SweepError, match='KEY=V1,V2'):
    sweep.grid_runs(['model.pool'])


def test_sweep_file_and_dry_run(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.sweep',
                         '--sweep=experiments/fashion_mnist_ablations.py:cnn', f'--workdir={tmp_path}', '--dry_run'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stdout.splitlines() if 'train.py' in l]
  assert len(lines) == 6 and all('--config.train.epochs=4' in l for l in lines)
  assert any('--config.model.pool=sum' in l for l in lines)
  assert not os.path.exists(tmp_path / 'sweep.csv')


@pytest.mark.slow
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
  assert '| validation_accuracy (mean) |' in md, 'settings are compared on the held-out split by default'
  assert all(0 <= float(r['validation_accuracy']) <= 1 for r in rows)
  assert os.path.getsize(tmp_path / 'sweep.png') > 0
  assert os.path.getsize(tmp_path / 'sweep_learning_rate.png') > 0, 'a numeric axis is plotted against its values'
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0 and 'train.py' not in again.stdout, 'finished runs are skipped'


def finished_run(run_dir, config, overrides):
  """A workdir as train.py leaves it: config.json of the resolved config, and results.json."""
  os.makedirs(run_dir)
  resolved = workdir_lib.config_to_dict(cli.load_config(config, overrides))
  (run_dir / 'config.json').write_text(json.dumps(resolved))
  (run_dir / 'results.json').write_text('{}')


def test_load_config_resolves_as_train_py_does(tmp_path):
  """The sweep decides 'finished' by comparing with cli.load_config: it must equal the config.json train.py
  writes for the same overrides."""
  proc = subprocess.run([sys.executable, 'train.py', '--config=experiments/hidden_units.py:quick',
                         f'--workdir={tmp_path}', '--config.train.lr_decay_steps=500',
                         '--config.model.hidden_units=2,3,10'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  resolved = cli.load_config('experiments/hidden_units.py:quick',
                             {'train.lr_decay_steps': '500', 'model.hidden_units': '2,3,10'})
  assert workdir_lib.config_to_dict(resolved) == json.loads((tmp_path / 'config.json').read_text())


def test_slurm_array_holds_one_task_per_unfinished_run(tmp_path):
  finished_run(tmp_path / 'pool=max' / 'seed_0', 'experiments/fashion_mnist.py:cnn', {'model.pool': 'max', 'seed': 0})
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


def sweep_cmd(tmp_path, *args):
  return subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--workdir={tmp_path}', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('args,fragment', [
    (['--config=experiments/fashion_mnist.py:mlp', '--seeds=a'], '--seeds=a must be whole numbers'),
    (['--config=experiments/fashion_mnist.py:mlp', '--set=KEY'], '--set=KEY is not KEY=VALUE'),
    (['--config=experiments/fashion_mnist.py:mlp', '--bogus=1'], "Unknown command line flag 'bogus'"),
    (['--config=experiments/fashion_mnist.py:mlp', 'train.epochs=3'], "unexpected argument 'train.epochs=3'"),
    (['--config=experiments/fashion_mnist.py:mlp', '--metric=bogus'], '--metric=bogus is not a figure of'),
    (['--config=experiments/nope.py', '--grid=seed=1'], 'experiments/nope.py does not exist'),
    (['--config=experiments/fashion_mnist.py:mlp', '--grid=model.widht=1,2'], "unknown config key 'model.widht'"),
    (['--config=experiments/fashion_mnist.py:mlp', '--grid=train.epochs=1,x'], '--config.train.epochs=x'),
    (['--sweep=experiments/fashion_mnist_ablations.py:pooling'], 'pass cnn or mlp'),
    (['--config=experiments/hidden_units.py:quick', '--grid=train.learning_rate=-1,1'],
     'run learning_rate=-1 (seed 0): train.learning_rate must be > 0'),
    (['--config=experiments/fashion_mnist.py:mlp', '--grid=model.dropout=0.2,1.5'],
     'run dropout=1.5 (seed 0): model.dropout must be in [0, 1)'),
    (['--config=experiments/hidden_units.py:quick', '--metric=test_accuracy'],
     'choose one of claims_holding, num_models, train_time_s, wall_time_s, claim_<id> for id in easy_few_units/'
     'hard_few_units/hard_many_units/more_units_fit_more_easily/more_units_more_powerful/single_layer_linear/'
     'zero_init_stuck, {train,test}_accuracy_{median,spread}_<task>_d<depth>_w<width> for task in corner/stripes, '
     'depth in 1, width in 2/10'),
])
def test_bad_sweeps_are_refused_before_any_run(tmp_path, args, fragment):
  assert_one_line_error(sweep_cmd(tmp_path / 's', *args), fragment)
  assert not os.path.exists(tmp_path / 's'), 'nothing is written'


@pytest.mark.slow
def test_a_changed_config_is_not_reported_as_the_old_runs(tmp_path):
  """A sweep's finished runs are reused only if they ran the config the sweep would run now; otherwise the
  sweep stops naming what differs, or --move_changed keeps the old run aside and runs the new one."""
  base = ['--config=experiments/hidden_units.py:quick', '--metric=num_models', '--set=claims.zero_init=False',
          '--set=claims.at_epoch=2']
  first = sweep_cmd(tmp_path, *base, '--set=train.epochs=2')
  assert first.returncode == 0, first.stderr[-2000:]
  run_dir = tmp_path / 'default' / 'seed_0'
  assert json.loads((run_dir / 'config.json').read_text())['train']['epochs'] == 2
  again = sweep_cmd(tmp_path, *base, '--set=train.epochs=2')
  assert again.returncode == 0 and 'train.py' not in again.stdout, 'the same sweep skips its finished run'
  before = (run_dir / 'results.json').read_bytes()
  changed = sweep_cmd(tmp_path, *base, '--set=train.epochs=3')
  assert_one_line_error(changed, 'train.epochs: 2 -> 3', '--move_changed')
  assert (run_dir / 'results.json').read_bytes() == before
  moved = sweep_cmd(tmp_path, *base, '--set=train.epochs=3', '--move_changed')
  assert moved.returncode == 0, moved.stderr[-2000:]
  assert json.loads((run_dir / 'config.json').read_text())['train']['epochs'] == 3
  assert (tmp_path / 'default' / 'seed_0.replaced-1' / 'results.json').read_bytes() == before
  (run_dir / 'metrics.jsonl').write_text('{"step": 1\n')  # a finished run's metrics damaged: said so, not "changed"
  damaged = sweep_cmd(tmp_path, *base, '--set=train.epochs=3')
  assert_one_line_error(damaged, '1 run workdir(s) of this sweep are damaged, e.g. run default seed 0: line 1 of',
                        'is not a JSON object')


@pytest.mark.slow
def test_a_hidden_units_grid_is_summarised_by_its_claims_and_accuracies(tmp_path):
  """The lecture's experiment as a sweep: two step sizes in quick mode, summarised end to end (sweep.csv with
  each claim's verdict and the per-setting accuracies, sweep.md with the claims per setting, sweep.png)."""
  proc = sweep_cmd(tmp_path, '--config=experiments/hidden_units.py:quick', '--grid=train.learning_rate=0.3,1.0',
                   '--set=claims.zero_init=False', '--set=model.include_linear=False')
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / 'sweep.csv')))
  assert [r['name'] for r in rows] == ['learning_rate=0.3', 'learning_rate=1.0']
  for r in rows:
    results = json.loads((tmp_path / r['name'] / 'seed_0' / 'results.json').read_text())
    results.update(json.loads((tmp_path / r['name'] / 'seed_0' / 'claims.json').read_text()))
    assert int(r['claims_holding']) == sum(c['holds'] for c in results['claims'])
    assert [int(r[f'claim_{c["id"]}']) for c in results['claims']] == [c['holds'] for c in results['claims']]
    stripes2 = [x['train_accuracy'] for x in results['records'] if x['task'] == 'stripes' and x['hidden_units'] == 2]
    assert float(r['train_accuracy_median_stripes_d1_w2']) == pytest.approx(float(np.median(stripes2)))
    assert float(r['train_accuracy_spread_stripes_d1_w2']) == pytest.approx(max(stripes2) - min(stripes2))
  md = (tmp_path / 'sweep.md').read_text()
  assert '| setting | overrides | claims_holding (mean) |' in md
  assert '| `hard_few_units`: on stripes, SGD does not find a solution with 2 tanh hidden units' in md
  assert (tmp_path / 'sweep.png').stat().st_size > 0 and (tmp_path / 'sweep_learning_rate.png').stat().st_size > 0


@pytest.mark.slow
def test_sigterm_reaches_the_running_run_which_saves_and_the_same_sweep_resumes(fashion_mnist_tfds, tmp_path):
  """A SLURM pre-emption of the sweep: the running train.py gets the SIGTERM, saves and exits; the sweep waits
  for it, starts nothing more and stops in one line; no child is left holding a lock, and the same command then
  resumes and finishes every run."""
  cmd = [sys.executable, '-m', 'experiments.sweep', '--config=experiments/fashion_mnist.py:mlp,quick',
         f'--workdir={tmp_path}', '--grid=train.learning_rate=0.001,0.003',
         f'--set=data.tfds_dir={fashion_mnist_tfds}', '--set=data.num_train=1024', '--set=data.num_test=200',
         '--set=train.batch_size=32', '--set=train.epochs=6', '--set=train.log_every=1']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  first = tmp_path / 'learning_rate=0.001' / 'seed_0' / 'metrics.jsonl'
  deadline = time.time() + 240
  while (not first.exists() or not first.read_text().strip()) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  lines = [l for l in message_lines(err) if not l.startswith('SIGTERM: saved the checkpoint')]
  assert lines == ['SIGTERM: the running runs saved their checkpoints and no other run started; run the '
                   'same sweep command to resume'], err[-2000:]
  assert os.listdir(tmp_path / 'learning_rate=0.001' / 'seed_0' / 'checkpoints'), 'the run saved'
  assert not (tmp_path / 'learning_rate=0.003').exists(), 'no run started after the signal'
  orphans = subprocess.run(['pgrep', '-f', str(tmp_path)], capture_output=True, text=True).stdout.split()
  assert not orphans, 'no train.py left running'
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert again.returncode == 0, again.stderr[-2000:]
  assert len(list(csv.DictReader(open(tmp_path / 'sweep.csv')))) == 2


def test_a_run_without_the_swept_override_counts_with_its_default():
  """A sweep whose default run has no override (the MLP ablation's 256-128-100_default): its config's value."""
  config = lambda lr, dense: ml_collections.ConfigDict({'train': {'learning_rate': lr}, 'model': {'dense': dense}})
  rates = [{'overrides': {'train.learning_rate': 0.3}, 'config': config(0.3, (256,))},
           {'overrides': {}, 'config': config(1.0, (256,))}]
  assert sweep_report.numeric_axis(rates) == 'train.learning_rate'
  assert [sweep_report.run_value(r, 'train.learning_rate') for r in rates] == [0.3, 1.0]
  widths = [{'overrides': {'model.dense': '64'}, 'config': config(1.0, (64,))},
            {'overrides': {}, 'config': config(1.0, (256, 128, 100))}]
  assert sweep_report.numeric_axis(widths) is None  # a tuple is not a number: no line plot, and no KeyError
