"""experiments/alexnet_imagenet.py end to end on fake ImageNet archives prepared by TFDS's builder and the
prepared store: the narrow network (`quick,narrow`: every layer of the 2012 network at an eighth of its widths)
for results, SIGTERM and resume, 10-crop and ensemble evaluation; the full-size network (61M parameters at
224x224) for one step and its evaluation; and the throughput benchmark's promise to run without TensorFlow."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from experiments import alexnet_imagenet
import nets
from nets import alexnet
from tests.helpers import assert_one_line_error
from tests.helpers import logged_step
from tests.helpers import ROOT
from tests.helpers import USER_ENV

NARROW = 'experiments/alexnet_imagenet.py:quick,narrow'


def command(workdir, tfds_dir, *extra, script='train.py', config=NARROW):
  return [sys.executable, script, f'--config={config}', f'--workdir={workdir}', f'--config.data.tfds_dir={tfds_dir}',
          *extra]


def run(*args, **kw):
  return subprocess.run(command(*args, **kw), cwd=ROOT, capture_output=True, text=True, timeout=600, env=USER_ENV)


def read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f) if name.endswith('.json') else f.read()


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('imagenet_tfds'))


@pytest.fixture(scope='module')
def quick(tfds_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('alexnet') / 'quick')
  proc = run(workdir, tfds_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_quick_trains_the_network_and_reports_beside_the_paper(quick):
  r = read(quick, 'results.json')
  arch = alexnet.Arch.from_config(alexnet_imagenet.get_config('quick,narrow').model)
  assert arch.widths == (12, 32, 48, 48, 32) and arch.groups == (1, 2, 1, 2, 2) and arch.lrn
  assert r['num_params'] == nets.num_params(jax.eval_shape(lambda: alexnet.init(jax.random.PRNGKey(0), arch)))
  assert r['steps'] == 4 and r['eval_crops'] == 10
  assert 0 <= r['top5_error'] <= r['top1_error'] <= 1 and r['final_loss'] > 0 and len(r['params_sha256']) == 64
  md = read(quick, 'results.md')
  assert 'paper 1 model (published) | 0.407 | 0.182' in md and 'paper 5 models (published) | 0.381 | 0.164' in md
  assert sorted(os.listdir(os.path.join(quick, 'checkpoints')), key=int) == ['2', '4']


@pytest.mark.slow
def test_the_full_size_network_takes_a_step_and_evaluates_ten_crops(tfds_dir, tmp_path):
  """The paper's 60,965,224 parameters at 224x224: one step on 8 fake images, then 10-crop evaluation."""
  workdir = str(tmp_path / 'full')
  proc = run(workdir, tfds_dir, '--config.train.epochs=1', '--config.data.num_train=8',
             config='experiments/alexnet_imagenet.py:quick')
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = read(workdir, 'results.json')
  assert r['num_params'] == 60_965_224 and r['steps'] == 1 and r['eval_crops'] == 10
  assert 0 <= r['top5_error'] <= r['top1_error'] <= 1 and r['final_loss'] > 0


@pytest.mark.slow
def test_sigterm_then_resume_ends_bitwise_equal(quick, tfds_dir, tmp_path):
  workdir = str(tmp_path / 'terminated')
  proc = subprocess.Popen(command(workdir, tfds_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=USER_ENV)
  while logged_step(workdir) < 1 and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0 and 'SIGTERM: saved the checkpoint' in out, err[-2000:]
  resumed = run(workdir, tfds_dir)
  assert resumed.returncode == 0 and 'resuming from the checkpoint' in resumed.stdout, resumed.stderr[-2000:]
  assert read(workdir, 'results.json')['params_sha256'] == read(quick, 'results.json')['params_sha256']


@pytest.mark.slow
def test_ten_crop_and_ensemble_evaluation(quick, tfds_dir, tmp_path):
  """eval.py re-evaluates the workdir as training did; --ensemble averages the softmax outputs of two models
  trained with different seeds: a loss other than either member's, and at most their mean (cross-entropy of
  averaged probabilities, by Jensen's inequality)."""
  proc = run(quick, tfds_dir, script='eval.py')
  assert proc.returncode == 0, proc.stderr[-2000:]
  one = read(quick, 'eval.json')
  assert one['crops'] == 10 and one['models'] == 1
  assert one['top1_error'] == pytest.approx(read(quick, 'results.json')['top1_error'])
  other = str(tmp_path / 'seed1')
  for script in ('train.py', 'eval.py'):
    proc = run(other, tfds_dir, '--config.seed=1', script=script)
    assert proc.returncode == 0, proc.stderr[-2000:]
  member = read(other, 'eval.json')
  proc = run(quick, tfds_dir, f'--ensemble={other}', script='eval.py')
  assert proc.returncode == 0, proc.stderr[-2000:]
  two = read(quick, 'eval.json')
  assert two['models'] == 2 and two['ensemble'] == [other]
  assert two['test_loss'] not in (one['test_loss'], member['test_loss'])
  assert two['test_loss'] <= (one['test_loss'] + member['test_loss']) / 2 + 1e-6
  md = read(quick, 'results.md')
  assert md.count('## Evaluation (eval.py)') == 1 and 'step 4, 2 models, 10 crops' in md
  assert_one_line_error(run(quick, tfds_dir, f'--ensemble={tmp_path / "nothing"}', script='eval.py'),
                        'missing or empty')
  changed = tmp_path / 'other_model'
  subprocess.run(['cp', '-r', other, str(changed)], check=True)
  config = json.loads((changed / 'config.json').read_text())
  config['model']['bias_one'] = 0.1
  (changed / 'config.json').write_text(json.dumps(config))
  assert_one_line_error(run(quick, tfds_dir, f'--ensemble={changed}', script='eval.py'),
                        f'--ensemble member={changed} holds a run with another config (model.bias_one: 0.1 -> 1.0)',
                        'drop it from --ensemble')


def test_throughput_benchmark_imports_no_tensorflow():
  code = ('import sys; sys.argv = ["x"]; import benchmarks.alexnet_throughput; '
          'bad = {"tensorflow", "tensorflow_datasets", "ml_collections", "tqdm"} & set(sys.modules); '
          'assert not bad, bad')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env=USER_ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_throughput_benchmark_runs_and_records_its_layout():
  """End to end at a tiny batch on the CPU: the direct conv1 layout when asked, in the JSON line; an unknown
  network gets argparse's one-line error."""
  cmd = [sys.executable, 'benchmarks/alexnet_throughput.py', '--networks=torchvision', '--kernels=split_groups',
         '--no_torch', '--batch=2', '--steps=1', '--repeats=1']
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=USER_ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['kernels'] == ['split_groups']
  assert result['networks']['torchvision']['images_per_s'] > 0
  proc = subprocess.run(cmd[:2] + ['--networks=vgg'], cwd=ROOT, capture_output=True, text=True, env=USER_ENV)
  assert proc.returncode == 2 and "unknown networks ['vgg']" in proc.stderr


def test_missing_imagenet_gets_one_line_from_train_and_prepare(tmp_path):
  env = {k: v for k, v in USER_ENV.items() if k != 'IMAGENET_MANUAL_DIR'}
  proc = subprocess.run([sys.executable, 'train.py', '--config=experiments/alexnet_imagenet.py',
                         f'--workdir={tmp_path / "w"}', f'--config.data.tfds_dir={tmp_path / "tfds"}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert_one_line_error(proc, 'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar not in',
                        str(tmp_path / 'tfds' / 'downloads' / 'manual'))
  proc = subprocess.run([sys.executable, '-m', 'trainnets.data.imagenet_store', f'--tfds_dir={tmp_path / "tfds"}'],
                        cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=env)
  assert_one_line_error(proc, 'image-net.org')


def _damage(path, offset, value=None):
  """Overwrites one byte of `path` (inverted, or set to `value`), keeping its size."""
  data = bytearray(open(path, 'rb').read())
  data[offset] = (data[offset] ^ 0xFF) if value is None else value
  open(path, 'wb').write(bytes(data))


def _edit_labels(path):
  """Rewrites a shard's .npz with other labels of the same size, as an edit would."""
  import numpy as np  # noqa: PLC0415

  with np.load(path) as z:
    arrays = dict(z)
  arrays['labels'] = (arrays['labels'] + 1) % 1000
  before = os.path.getsize(path)
  np.savez(path.removesuffix('.npz'), **arrays)
  assert os.path.getsize(path) == before


@pytest.mark.slow
@pytest.mark.parametrize('damage,fragment', [
    ('labels', 'changed since it was written (train-00000)'),
    ('jpeg', 'image shard(s) of the store in'),
    ('statistics', 'changed since it was written (statistics.npz)'),
    ('manifest', 'manifest.json does not match its sha256'),
])
def test_a_damaged_store_never_reaches_a_step(quick, tfds_dir, tmp_path, damage, fragment):
  """Edited labels of the same size, a flipped byte inside a stored JPEG, changed statistics or an edited
  manifest: train.py stops in one line naming the damage, before its workdir exists."""
  copy = tmp_path / 'tfds'
  subprocess.run(['cp', '-r', tfds_dir, str(copy)], check=True)
  store = copy / 'fake_imagenet2012_20' / 'imagenet2012_256'
  if damage == 'labels':
    _edit_labels(str(store / 'train-00000.npz'))
  elif damage == 'jpeg':
    _damage(str(store / 'train-00000.jpegs'), 5000)
  elif damage == 'statistics':
    _damage(str(store / 'statistics.npz'), os.path.getsize(store / 'statistics.npz') // 2)
  else:
    text = (store / 'manifest.json').read_text()
    (store / 'manifest.json').write_text(text.replace('"n01440764"', '"n00000000"', 1))
  workdir = tmp_path / 'w'
  proc = subprocess.run(command(str(workdir), str(copy)), cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=USER_ENV)
  assert_one_line_error(proc, fragment)
  assert not workdir.exists(), 'nothing written: the store is checked before the workdir is made'
