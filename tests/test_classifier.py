"""The classifier trainer end to end: artefacts, bitwise resume after SIGKILL, SIGTERM, divergence, eval.py,
corrupt checkpoints, and the sharded step on 8 devices against 1 device."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import cnn
from tests.helpers import assert_one_line_error
from tests.helpers import logged_step
from tests.helpers import message_lines
from tests.helpers import PROGRESS_LINE
from tests.helpers import ROOT
from tests.helpers import snapshot
from tests.helpers import USER_ENV
from trainnets import errors
from trainnets import kernels
from trainnets import tf_host
from trainnets.training import sharding
from trainnets.training import steps

MLP = 'experiments/fashion_mnist.py:mlp,quick'


def command(workdir, tfds_dir, *extra, config=MLP, script='train.py'):
  return [sys.executable, script, f'--config={config}', f'--workdir={workdir}', f'--config.data.tfds_dir={tfds_dir}',
          '--config.data.num_train=512', '--config.data.num_test=200', '--config.train.batch_size=64',
          '--config.train.epochs=3', '--config.train.checkpoint_every=4', '--config.train.log_every=1', *extra]


def run(*args, env=None, **kw):
  return subprocess.run(command(*args, **kw), cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=env or USER_ENV)


def results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def start_and_signal(workdir, tfds_dir, at_step, sig):
  """Starts a run, sends `sig` once it has logged step `at_step`, and returns the finished process."""
  proc = subprocess.Popen(command(workdir, tfds_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=USER_ENV)
  deadline = time.time() + 240
  while logged_step(workdir) < at_step and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, f'the run ended before step {at_step}: {proc.communicate()[1][-2000:]}'
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err


@pytest.fixture(scope='module')
def uninterrupted(fashion_mnist_tfds, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('clf') / 'uninterrupted')
  proc = run(workdir, fashion_mnist_tfds)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_run_writes_results_metrics_tensorboard_and_checkpoints(uninterrupted):
  r = results(uninterrupted)
  for key in ('final_loss', 'test_accuracy', 'num_params', 'steps', 'wall_time_s', 'params_sha256'):
    assert key in r, key
  assert r['steps'] == 3 * (512 // 64) and len(r['per_epoch']) == 3
  assert r['num_params'] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100 + 100 * 10 + 10
  assert r['test_accuracy'] > 0.5, 'three short epochs of an MLP still learn something'
  assert r['per_epoch_split'] == 'validation' and r['num_validation'] == 1000
  assert r['validation_accuracy'] == r['per_epoch'][-1]['validation_accuracy'] != r['test_accuracy']
  assert all('test_accuracy' not in h for h in r['per_epoch'])
  assert r['kernels'] == [], 'an MLP uses none of the convolution, pooling or normalisation kernels auto chooses'
  with open(os.path.join(uninterrupted, 'results.md')) as f:
    md = f.read()
  assert '(kernels: none)' in md and 'the test split was evaluated once, at the end' in md
  assert 'Command: `python train.py --config=experiments/fashion_mnist.py:mlp,quick' in md and 'Machine: ' in md
  assert f'{os.cpu_count()} cores' in r['machine'] and 'jax ' in r['machine']
  assert sorted(os.listdir(os.path.join(uninterrupted, 'checkpoints')), key=int) == ['16', '20', '24']
  assert r['parameters']['fc1/W'] == [784, 256] and sorted(r['parameters'])[-2:] == ['out/W', 'out/b']
  board = os.path.join(uninterrupted, 'tensorboard')
  events = [tf_host.tf().compat.v1.train.summary_iterator(os.path.join(board, f)) for f in os.listdir(board)]
  tags = {v.tag for records in events for e in records for v in e.summary.value}
  assert {'train/loss', 'train/grad_norm', 'validation/accuracy', 'validation/top5_error'} <= tags, 'metrics\' scalars'
  assert '_hparams_/session_start_info' in tags, 'the resolved config, for TensorBoard\'s HParams view'
  assert not any(t.startswith('test/') for t in tags), 'the test split is not evaluated during training'
  assert os.path.getsize(os.path.join(uninterrupted, 'figures', 'learning_curves.png')) > 0
  steps = [json.loads(l)['step'] for l in open(os.path.join(uninterrupted, 'metrics.jsonl'))]
  assert steps == sorted(steps) and steps[-1] == 24


def test_the_trainer_runs_in_process_as_a_library(uninterrupted, fashion_mnist_tfds, tmp_path):
  """train_and_evaluate called directly (a debugger can step into it), as flax's train_test.py does: the run of
  train.py's test above, here on the test process's 8 CPU devices, whose gradient sums may differ in the last
  bits from one device's."""
  from trainnets.training import classifier  # noqa: PLC0415
  from trainnets.training import cli  # noqa: PLC0415

  argv = command(tmp_path / 'w', fashion_mnist_tfds)
  config = cli.load_config(MLP, dict(a[len('--config.'):].split('=', 1) for a in argv if a.startswith('--config.')))
  out = classifier.train_and_evaluate(config, str(tmp_path / 'w'))
  expected = results(uninterrupted)
  assert out == results(tmp_path / 'w') and out['steps'] == expected['steps'] == 24
  assert set(out) == set(expected) and [r['step'] for r in out['per_epoch']] == [8, 16, 24]
  assert out['test_accuracy'] == pytest.approx(expected['test_accuracy'], abs=0.02)


@pytest.mark.parametrize('spec,shape,expected', [
    ('experiments/fashion_mnist.py:mlp', (28, 28, 1), ()),
    ('experiments/fashion_mnist.py:cnn', (28, 28, 1), ('sliced_conv', 'onednn_conv', 'max_pool_grad')),
    ('experiments/alexnet_imagenet.py:quick,narrow', (224, 224, 3), kernels.NAMES),
])
def test_a_run_lists_only_the_kernels_that_change_its_model(spec, shape, expected):
  """results.json's kernels: those that rewrite an op the model calls (grouped convolutions for split_groups,
  strided ones for space_to_depth), found by tracing the model with recording ops."""
  from trainnets.training import classifier  # noqa: PLC0415
  from trainnets.training import cli  # noqa: PLC0415

  assert classifier._kernels_applied(cli.load_config(spec), kernels.NAMES, shape) == expected


def test_results_are_a_pure_function_of_the_config_the_metrics_and_the_final_evaluation():
  """results.json without training: the last training loss, the per-epoch validation rows, the test split read
  once, and the eval.crops views where they were evaluated."""
  from trainnets.training import classifier  # noqa: PLC0415
  from trainnets.training import cli  # noqa: PLC0415

  rows = [{'step': 4, 'epoch': 0, 'train_loss': 2.0},
          {'step': 8, 'epoch': 1, 'validation_loss': 1.5, 'validation_accuracy': 0.5, 'validation_top5_error': 0.1},
          {'step': 8, 'epoch': 0, 'train_loss': 1.0}]
  final = {'test': {'test_accuracy': 0.625, 'test_loss': 1.25, 'top1_error': 0.375, 'top5_error': 0.0625},
           'params_sha256': 'ab', 'steps': 8, 'num_params': 10, 'num_validation': 4, 'parameters': {'W': [2, 5]},
           'wall_time_s': 1.5, 'kernels': [], 'devices': ['cpu:0'], 'processes': 1}
  config = cli.load_config('experiments/alexnet_imagenet.py:quick')  # 4 validation images, 10 test crops
  one = classifier.results(config, rows, final)
  assert (one['final_loss'], one['test_accuracy'], one['validation_accuracy'], one['top1_error'],
          one['eval_crops']) == (1.0, 0.625, 0.5, 0.375, 1)
  assert one['per_epoch'] == [{'epoch': 1, 'step': 8, 'validation_loss': 1.5, 'validation_accuracy': 0.5,
                               'validation_top5_error': 0.1}]
  ten = classifier.results(config, rows, {**final, 'crops': {'top1_error': 0.25, 'top5_error': 0.0}})
  assert (ten['top1_error'], ten['top5_error'], ten['eval_crops'], ten['centre_crop_top1_error']) == (
      0.25, 0.0, 10, 0.375)


@pytest.mark.slow
def test_a_run_is_extended_only_when_asked_and_moved_freely(uninterrupted, fashion_mnist_tfds, tmp_path):
  """More epochs for a finished run: refused without --extend (nothing changes), continued with it from the
  last checkpoint, the change recorded in metrics.jsonl. Another progress cadence (a key that says how, not what)
  needs no flag."""
  workdir = tmp_path / 'extended'
  shutil.copytree(uninterrupted, workdir)
  before = snapshot(workdir)
  assert_one_line_error(run(str(workdir), fashion_mnist_tfds, '--config.train.epochs=4'), 'train.epochs: 3 -> 4',
                        'pass --extend')
  assert snapshot(workdir) == before
  proc = run(str(workdir), fashion_mnist_tfds, '--config.train.epochs=4', '--config.train.progress_every_s=5',
             '--extend')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert results(workdir)['steps'] == 32 and [r['step'] for r in results(workdir)['per_epoch']] == [8, 16, 24, 32]
  changed = [r for r in map(json.loads, open(workdir / 'metrics.jsonl')) if 'config_changed' in r]
  assert [(r['step'], r['extend']) for r in changed] == [(24, True)]
  assert changed[0]['config_changed'] == {'train.epochs': {'from': 3, 'to': 4},
                                          'train.progress_every_s': {'from': 30.0, 'to': 5.0}}


@pytest.mark.slow
def test_a_rerun_of_a_finished_run_changes_nothing(uninterrupted, fashion_mnist_tfds, tmp_path):
  """The same command again: no training, no evaluation, no new file, every byte as it was (the lock aside,
  which records who held it last)."""
  workdir = tmp_path / 'finished'
  shutil.copytree(uninterrupted, workdir)
  before = {k: v for k, v in snapshot(workdir).items() if k != '.lock'}
  proc = run(str(workdir), fashion_mnist_tfds)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'is finished; its results stand' in proc.stdout
  assert {k: v for k, v in snapshot(workdir).items() if k != '.lock'} == before


@pytest.mark.slow
def test_a_log_file_gets_progress_lines_and_metrics_get_rate_and_speed(fashion_mnist_tfds, tmp_path):
  """stderr redirected (a SLURM log): a line per progress_every_s with step, epoch, loss, lr, images/s, elapsed
  and ETA; metrics.jsonl holds the learning rate and images/s; profile_steps writes a trace of those steps."""
  proc = run(tmp_path / 'w', fashion_mnist_tfds, '--config.train.progress_every_s=0',
             '--config.train.profile_steps=3,4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if PROGRESS_LINE.match(l) and '[fashion_mnist] step' in l]
  assert len(lines) == 24, 'every step, with progress_every_s=0'
  assert re.search(r'step 12/24 \(50.0%\) epoch 2/3 loss [\d.]+ lr 0.00\d+ [\d,]+ images/s elapsed \d+:\d\d eta ',
                   lines[11]), lines[11]
  rows = [json.loads(l) for l in open(tmp_path / 'w' / 'metrics.jsonl') if 'train_loss' in l]
  cosine = [1e-3 * 0.5 * (1 + np.cos(np.pi * (r['step'] - 1) / 24)) for r in rows]
  np.testing.assert_allclose([r['train_learning_rate'] for r in rows], cosine, rtol=1e-5)
  assert all(r['train_images_per_s'] > 0 for r in rows)
  traces = list((tmp_path / 'w' / 'profile').glob('plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_is_bitwise_equal(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = str(tmp_path / 'killed')
  for at in (6, 17):  # mid-epoch before the first checkpoint's epoch ends, and in the last epoch
    code, _, _ = start_and_signal(workdir, fashion_mnist_tfds, at, signal.SIGKILL)
    assert code == -signal.SIGKILL
  proc = run(workdir, fashion_mnist_tfds)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resuming from the checkpoint at step' in proc.stdout
  assert results(workdir)['params_sha256'] == results(uninterrupted)['params_sha256']
  steps = [json.loads(l)['step'] for l in open(os.path.join(workdir, 'metrics.jsonl')) if 'train_loss' in l]
  assert steps == list(range(1, 25)), 'metrics.jsonl holds each step once, as an uninterrupted run writes it'


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = str(tmp_path / 'terminated')
  code, out, err = start_and_signal(workdir, fashion_mnist_tfds, 5, signal.SIGTERM)
  assert code == 0, err[-2000:]
  saved = int(out.split('saved the checkpoint at step ')[1].split()[0])
  assert saved >= 5 and str(saved) in os.listdir(os.path.join(workdir, 'checkpoints')), err[-3000:]
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  first_segment = max(r['elapsed_s'] for r in rows if r['step'] <= saved and 'elapsed_s' in r)
  proc = run(workdir, fashion_mnist_tfds)
  assert proc.returncode == 0 and f'resuming from the checkpoint at step {saved}' in proc.stdout
  assert results(workdir)['params_sha256'] == results(uninterrupted)['params_sha256']
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl')) if 'elapsed_s' in l]
  elapsed = [r['elapsed_s'] for r in rows]
  assert elapsed == sorted(elapsed), 'elapsed_s goes on counting across the resume'
  assert results(workdir)['wall_time_s'] >= elapsed[-1] > first_segment


def test_divergence_stops_with_the_step_and_keeps_good_checkpoints(fashion_mnist_tfds, tmp_path):
  workdir = str(tmp_path / 'diverged')
  proc = run(workdir, fashion_mnist_tfds, '--config.train.learning_rate=1e30', '--config.train.optimizer=sgd')
  assert_one_line_error(proc, 'diverged at step', 'learning_rate')
  diverged_at = int(proc.stderr.split('at step ')[1].split()[0])
  saved = os.path.join(workdir, 'checkpoints')  # made by the first save: absent if it diverged before one
  for step in os.listdir(saved) if os.path.exists(saved) else []:
    assert int(step) < diverged_at


@pytest.mark.slow
def test_eval_latest_and_given_step(uninterrupted, fashion_mnist_tfds):
  proc = run(uninterrupted, fashion_mnist_tfds, script='eval.py')
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.load(open(os.path.join(uninterrupted, 'eval.json')))
  assert out['step'] == 24 and out['test_accuracy'] == pytest.approx(results(uninterrupted)['test_accuracy'])
  assert out['params_sha256'] == results(uninterrupted)['params_sha256']
  assert set(out['per_class_accuracy']) == {'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                                            'Sneaker', 'Bag', 'Ankle boot'}
  assert np.asarray(out['confusion']).sum() == 200
  assert os.path.getsize(os.path.join(uninterrupted, 'figures', 'confusion_matrix.png')) > 0
  assert 'Trouser' in proc.stdout
  proc = run(uninterrupted, fashion_mnist_tfds, '--step=16', script='eval.py')
  assert proc.returncode == 0 and json.load(open(os.path.join(uninterrupted, 'eval.json')))['step'] == 16
  assert_one_line_error(run(uninterrupted, fashion_mnist_tfds, '--step=3', script='eval.py'), 'no checkpoint at step 3')


def test_eval_of_a_missing_or_empty_workdir(fashion_mnist_tfds, tmp_path):
  assert_one_line_error(run(str(tmp_path / 'none'), fashion_mnist_tfds, script='eval.py'), 'missing or empty')
  os.makedirs(tmp_path / 'empty')
  assert_one_line_error(run(str(tmp_path / 'empty'), fashion_mnist_tfds, script='eval.py'), 'missing or empty')


def test_a_corrupt_checkpoint_is_never_loaded(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = tmp_path / 'corrupt'
  subprocess.run(['cp', '-r', uninterrupted, str(workdir)], check=True)
  (workdir / 'eval.json').unlink(missing_ok=True)  # another test may have evaluated the shared run already
  latest = workdir / 'checkpoints' / '24' / 'state'
  for base, _, files in os.walk(latest):  # flip bytes in every data file of the latest checkpoint
    for f in files:
      p = os.path.join(base, f)
      data = bytearray(open(p, 'rb').read())
      if len(data) > 64:
        data[len(data) // 2:len(data) // 2 + 32] = bytes(32)
        open(p, 'wb').write(bytes(data))
  proc = run(str(workdir), fashion_mnist_tfds, script='eval.py')
  assert_one_line_error(proc, f'checkpoint {workdir / "checkpoints" / "24"}', 'to resume from the previous checkpoint')
  assert not os.path.exists(workdir / 'eval.json'), 'nothing was evaluated with the damaged parameters'


def _rewrite_checkpoint(directory, step, change):
  """Rewrites checkpoint `step` in `directory` with change(state) but the metadata recorded for the original:
  damage that leaves the files readable (a flipped bit that orbax's formats do not notice)."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  with ocp.CheckpointManager(directory, item_names=('state', 'meta')) as m:
    raw = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  os.rename(os.path.join(directory, str(step)), os.path.join(directory, f'{step}.original'))
  with ocp.CheckpointManager(directory, item_names=('state', 'meta')) as m:
    m.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(change(raw['state'])),
                                         meta=ocp.args.JsonSave(raw['meta'])))
  shutil.rmtree(os.path.join(directory, f'{step}.original'))


@pytest.mark.slow
@pytest.mark.parametrize('where', ['opt_state', 'rng'])
def test_damage_outside_the_parameters_is_refused_too(uninterrupted, fashion_mnist_tfds, tmp_path, where):
  """The optimiser state (Adam's moments here) and the key are as checked as the parameters: a checkpoint whose
  state does not hash to the recorded sha256 is refused by a resume and by eval.py, and nothing is written."""
  workdir = tmp_path / 'damaged'
  subprocess.run(['cp', '-r', uninterrupted, str(workdir)], check=True)

  def change(state):
    leaves, tree = jax.tree.flatten(state[where])
    leaves[-1] = np.asarray(leaves[-1]).copy()
    leaves[-1].reshape(-1)[0] += 1  # one number of one array
    return {**state, where: jax.tree.unflatten(tree, leaves)}

  _rewrite_checkpoint(str(workdir / 'checkpoints'), 24, change)
  before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  for script, extra in (('eval.py', ()), ('train.py', ())):
    proc = run(str(workdir), fashion_mnist_tfds, *extra, script=script)
    assert_one_line_error(proc, f'checkpoint {workdir / "checkpoints" / "24"} is corrupt: its optimiser state, step '
                          'or key does not match', 'remove it to resume from the previous checkpoint')
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == before, 'nothing written'


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['deleted', 'truncated'])
def test_a_resume_whose_metrics_do_not_cover_its_checkpoint_is_refused(uninterrupted, fashion_mnist_tfds, tmp_path,
                                                                       damage):
  """metrics.jsonl deleted, or cut to its first rows, under a run: resuming (or rerunning the finished run)
  would write results.json without that history, so it is refused in one line and nothing is written."""
  workdir = tmp_path / damage
  subprocess.run(['cp', '-r', uninterrupted, str(workdir)], check=True)
  metrics = workdir / 'metrics.jsonl'
  if damage == 'deleted':
    metrics.unlink()
  else:
    metrics.write_text(''.join(metrics.read_text().splitlines(True)[:10]))  # up to step 10: epoch 1 of 3 evaluated
  before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  proc = run(str(workdir), fashion_mnist_tfds)
  lacks = ('the validation evaluation of epochs 1, 2, 3 and the training row of step 24' if damage == 'deleted'
           else 'the validation evaluation of epochs 2, 3 and the training row of step 24')
  assert_one_line_error(proc, f'metrics.jsonl lacks {lacks} that the checkpoint at step 24 follows')
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == before


def test_eval_of_a_workdir_without_checkpoints_touches_nothing(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = tmp_path / 'early'
  subprocess.run(['cp', '-r', uninterrupted, str(workdir)], check=True)
  shutil.rmtree(workdir / 'checkpoints')
  before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  assert_one_line_error(run(str(workdir), fashion_mnist_tfds, script='eval.py'), 'has no checkpoint')
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == before
  assert not (workdir / 'checkpoints').exists(), 'no empty checkpoints/ left behind'


def test_a_batch_the_devices_do_not_divide(fashion_mnist_tfds, tmp_path):
  env = {**USER_ENV, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  proc = run(str(tmp_path / 'w'), fashion_mnist_tfds, '--config.train.batch_size=60', env=env)
  assert_one_line_error(proc, 'does not split over 8 devices', 'batch_size=56')


@pytest.mark.parametrize('shard_dense', [False, True])
def test_one_step_on_8_devices_equals_one_device(shard_dense):
  """The data-parallel step: the global batch split over 8 devices gives the 1-device update (tolerance), with
  the parameters replicated or with the dense layers' weights split over the devices."""
  assert len(jax.devices()) == 8
  arch = cnn.Arch(conv=((8, 3, 1),), dense=(16,), dropout=0.5)
  apply = lambda p, x, train=False, key=None: cnn.apply(p, x, arch, train=train, key=key)
  tx = optax.sgd(0.1, momentum=0.9)
  params = cnn.init(jax.random.PRNGKey(0), arch, (8, 8, 1))
  batch = {'image': jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1)),
           'label': jax.random.randint(jax.random.PRNGKey(2), (16,), 0, 10)}
  out = {}
  for n in (1, 8):
    mesh = sharding.data_mesh(jax.devices()[:n])
    state = steps.initial_state(params, tx, jax.random.PRNGKey(3))
    layout = sharding.state_shardings(state, mesh, shard_dense=shard_dense)
    state = jax.device_put(jax.tree.map(jnp.copy, state), layout)
    step = steps.make_train_step(apply, tx, mesh, layout)
    for _ in range(2):
      state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
    assert state.params['conv1']['W'].sharding.is_fully_replicated
    fc1 = state.params['fc1']['W']
    assert fc1.sharding.is_fully_replicated == (not shard_dense or n == 1)
    if shard_dense and n == 8:  # each device holds 2 of fc1's 16 columns, and of their momentum
      assert {s.data.shape for s in fc1.addressable_shards} == {(fc1.shape[0], 2)}
      assert not state.opt_state[0].trace['fc1']['W'].sharding.is_fully_replicated
    out[n] = (state, metrics)
  for a, b in zip(jax.tree.leaves(out[1][0].params), jax.tree.leaves(out[8][0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1][1]['loss'], out[8][1]['loss'], rtol=1e-6)


def test_ensemble_and_ten_view_evaluation_average_probabilities():
  """make_eval_step: the prediction is the mean softmax over models and views; top-5 counts the label in the
  five most probable classes; padding (mask 0) counts for nothing."""
  arch = cnn.Arch(conv=((4, 3, 1),), dense=(8,), num_classes=12)
  apply = lambda p, x, train=False, key=None: cnn.apply(p, x, arch, train=train, key=key)
  models = [cnn.init(jax.random.PRNGKey(i), arch, (6, 6, 1)) for i in range(3)]
  images = jax.random.normal(jax.random.PRNGKey(5), (8, 10, 6, 6, 1))
  labels = jax.random.randint(jax.random.PRNGKey(6), (8,), 0, 12)
  mask = jnp.array([1.0] * 6 + [0.0] * 2)
  mesh = sharding.data_mesh()
  out = steps.make_eval_step(apply, mesh, 12)(steps.stack_models(*models),
                                               {'image': images, 'label': labels, 'mask': mask})
  probs = np.mean([jax.nn.softmax(apply(p, images.reshape(-1, 6, 6, 1))).reshape(8, 10, 12).mean(1)
                   for p in models], axis=0)
  real = np.asarray(mask) > 0
  lab = np.asarray(labels)
  assert int(out['count']) == 6
  assert int(out['correct']) == int(np.sum((probs.argmax(-1) == lab)[real]))
  top5 = np.argsort(-probs, -1)[:, :5]
  assert int(out['correct_top5']) == int(np.sum((top5 == lab[:, None]).any(-1)[real]))
  np.testing.assert_allclose(float(out['loss_sum']), -np.sum(np.log(probs[np.arange(8), lab])[real]), rtol=1e-5)
  assert np.asarray(out['confusion']).sum() == 6


@pytest.mark.slow
def test_ctrl_c_saves_at_the_next_step_then_resume_is_bitwise_equal(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = str(tmp_path / 'interrupted')
  code, _, err = start_and_signal(workdir, fashion_mnist_tfds, 5, signal.SIGINT)
  assert code == 130, err[-2000:]
  lines = message_lines(err)
  assert len(lines) == 1 and lines[0].startswith('SIGINT: saved the checkpoint at step '), err[-2000:]
  saved = int(lines[0].split('at step ')[1].split()[0])
  assert str(saved) in os.listdir(os.path.join(workdir, 'checkpoints'))
  proc = run(workdir, fashion_mnist_tfds)
  assert proc.returncode == 0 and f'resuming from the checkpoint at step {saved}' in proc.stdout
  assert results(workdir)['params_sha256'] == results(uninterrupted)['params_sha256']


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(fashion_mnist_tfds, tmp_path):
  workdir = str(tmp_path / 'stopped')
  proc = subprocess.Popen(command(workdir, fashion_mnist_tfds), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=USER_ENV)
  deadline = time.time() + 240
  while logged_step(workdir) < 3 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  lines = message_lines(err)
  assert proc.returncode == 130 and len(lines) == 1 and 'Traceback' not in err, err[-2000:]
  assert lines[0].startswith('SIGINT: saved') or lines[0].startswith('interrupted (Ctrl-C) at once'), lines


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_gets_one_line_and_keeps_earlier_checkpoints(fashion_mnist_tfds,
                                                                                       tmp_path):
  """A file-size limit stands in for a full disk: every write past it fails as a full disk's would. The first
  run saves checkpoints with room to spare; the second, resumed under the limit, fails at its next save."""
  workdir = str(tmp_path / 'full')
  code, _, err = start_and_signal(workdir, fashion_mnist_tfds, 5, signal.SIGTERM)
  assert code == 0, err[-2000:]
  kept = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  limited = ['bash', '-c', 'ulimit -f 200 && exec "$@"', 'bash', *command(workdir, fashion_mnist_tfds)]  # 200 KiB
  proc = subprocess.run(limited, cwd=ROOT, capture_output=True, text=True, timeout=300, env=USER_ENV)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = message_lines(proc.stderr)
  assert len(lines) == 1 and lines[0].startswith('error: could not save the checkpoint at step '), proc.stderr[-3000:]
  assert 'File too large' in lines[0] and 'run the same command to resume' in lines[0]
  assert sorted(s for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()) == kept
  proc = run(workdir, fashion_mnist_tfds)  # room again: resumes from the last good checkpoint and finishes
  assert proc.returncode == 0 and f'resuming from the checkpoint at step {max(kept, key=int)}' in proc.stdout


@pytest.mark.slow
def test_a_checkpoint_without_its_manifest_gets_one_line(uninterrupted, fashion_mnist_tfds, tmp_path):
  workdir = tmp_path / 'no_manifest'
  subprocess.run(['cp', '-r', uninterrupted, str(workdir)], check=True)
  os.remove(workdir / 'checkpoints' / '24' / 'state' / 'manifest.ocdbt')
  proc = run(str(workdir), fashion_mnist_tfds, script='eval.py')
  assert_one_line_error(proc, f'checkpoint {workdir}/checkpoints/24 cannot be read', 'remove that directory')
  proc = run(str(workdir), fashion_mnist_tfds)
  assert_one_line_error(proc, f'checkpoint {workdir}/checkpoints/24 cannot be read')


def test_a_truncated_training_record_gets_one_line(fashion_mnist_tfds, tmp_path):
  tfds_dir = tmp_path / 'tfds'
  subprocess.run(['cp', '-r', fashion_mnist_tfds, str(tfds_dir)], check=True)
  prepared = tfds_dir / 'fashion_mnist' / '3.0.1'
  record, = [f for f in os.listdir(prepared) if '-train.tfrecord' in f]
  os.truncate(prepared / record, 100_000)
  proc = run(str(tmp_path / 'w'), str(tfds_dir))
  assert_one_line_error(proc, f'the prepared fashion_mnist in {prepared} cannot be read', 'truncated record',
                        f'remove {prepared}')
  assert not os.path.exists(tmp_path / 'w')


def test_a_model_is_found_by_name_among_the_modules_of_nets(monkeypatch):
  """model.name names a module of nets/ with Arch, init and apply: adding a model is adding a file (here a module
  put in place by hand) and a config, with no edit to the trainer."""
  import types  # noqa: PLC0415

  import ml_collections  # noqa: PLC0415

  from trainnets.training import classifier  # noqa: PLC0415

  tiny = types.ModuleType('nets.tiny')

  class Arch:
    @classmethod
    def from_config(cls, model_cfg):
      del model_cfg
      return cls()

    def validate(self):
      return []

  tiny.Arch = Arch
  tiny.init = lambda key, arch, shape: {'W': jnp.ones((int(np.prod(shape)), 3))}
  tiny.apply = lambda p, x, arch, train=False, key=None, ops=None: x.reshape(x.shape[0], -1) @ p['W']
  monkeypatch.setitem(sys.modules, 'nets.tiny', tiny)
  config = ml_collections.ConfigDict({'model': {'name': 'tiny', 'kernels': 'none'}})
  init, apply, names = classifier.model_for(config)
  assert names == () and apply(init(None, (2, 2, 1)), jnp.ones((4, 2, 2, 1))).shape == (4, 3)
  config.model.name = 'vgg'
  with pytest.raises(errors.ConfigError, match="model.name 'vgg' is unknown; choose one of alexnet, cnn"):
    classifier.model_for(config)
