"""experiments/alexnet_imagenet.py:quick end to end: the real 61M-parameter network at 224x224 on fake ImageNet
archives prepared by TFDS's builder; results, SIGTERM and resume, 10-crop and ensemble evaluation, and the
throughput benchmark's promise to run without TensorFlow."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_classifier import logged_step
from tests.test_classifier import USER_ENV
from tests.test_cli import assert_one_line_error
from tests.test_cli import ROOT

QUICK = 'experiments/alexnet_imagenet.py:quick'


def command(workdir, tfds_dir, *extra, script='train.py'):
  return [sys.executable, script, f'--config={QUICK}', f'--workdir={workdir}', f'--config.data.tfds_dir={tfds_dir}',
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


def test_quick_trains_the_real_network_and_reports_beside_the_paper(quick):
  r = read(quick, 'results.json')
  assert r['num_params'] == 60_965_224 and r['steps'] == 4 and r['eval_crops'] == 10
  for key in ('final_loss', 'top1_error', 'top5_error', 'params_sha256'):
    assert key in r
  assert 0 <= r['top5_error'] <= r['top1_error'] <= 1
  md = read(quick, 'results.md')
  assert 'paper 1 model (published) | 0.407 | 0.182' in md and 'paper 5 models (published) | 0.381 | 0.164' in md
  assert sorted(os.listdir(os.path.join(quick, 'checkpoints')), key=int) == ['2', '4']


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


def test_ten_crop_and_ensemble_evaluation(quick, tfds_dir, tmp_path):
  proc = run(quick, tfds_dir, script='eval.py')
  assert proc.returncode == 0, proc.stderr[-2000:]
  one = read(quick, 'eval.json')
  assert one['crops'] == 10 and one['models'] == 1
  assert one['top1_error'] == pytest.approx(read(quick, 'results.json')['top1_error'])
  proc = run(quick, tfds_dir, f'--ensemble={quick}', script='eval.py')  # the same model twice: the same average
  assert proc.returncode == 0, proc.stderr[-2000:]
  two = read(quick, 'eval.json')
  assert two['models'] == 2 and two['top1_error'] == one['top1_error'] and two['top5_error'] == one['top5_error']
  assert two['test_loss'] == pytest.approx(one['test_loss'], rel=1e-5)
  md = read(quick, 'results.md')
  assert md.count('## Evaluation (eval.py)') == 1 and 'step 4, 2 models, 10 crops' in md
  assert_one_line_error(run(quick, tfds_dir, f'--ensemble={tmp_path / "nothing"}', script='eval.py'),
                        'missing or empty')


def test_throughput_benchmark_imports_no_tensorflow():
  code = ('import sys; sys.argv = ["x"]; import benchmarks.alexnet_throughput; '
          'bad = {"tensorflow", "tensorflow_datasets", "ml_collections", "tqdm"} & set(sys.modules); '
          'assert not bad, bad')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env=USER_ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]


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
  proc = subprocess.run([sys.executable, '-m', 'data.imagenet', f'--tfds_dir={tmp_path / "tfds"}'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=env)
  assert_one_line_error(proc, 'image-net.org')
