"""Per-example SGD throughput: this codebase against a numpy loop and scikit-learn, in one run on one machine.

  python benchmarks/toy_sgd.py [--repeats=5] [--models=1,64,256,2048] [--skip_full_run]

All three train a 2-10-1 tanh net by per-example SGD (batch size 1, constant step 0.1, no momentum) on the
`corner` task (200 points) and are timed over whole epochs:
  - this codebase: trainnets/training/vmap_sweep.py's compiled epoch (lax.scan over examples, the model axis sharded
    over one JAX device per core), timed after compilation, in both layouts of the step (train.layout): the one
    the trainer takes for these nets first, then the other (vmap over a leading model axis, or the model axis last:
    trainnets/training/models_last.py); an update is one model's step on one example, so M models do M updates
    per step;
  - numpy: a Python loop of the lecture's two-layer update (nets/backprop.py's equations), one model;
  - scikit-learn: MLPClassifier(solver='sgd', batch_size=1), one model (its loss is the logistic loss).
It also times the whole default hidden_units experiment (compilation and figures included; every program
compiled, as on a first run) unless --skip_full_run, and puts it against the machine's limit: the run's
model-updates per second of wall time and of training time beside this benchmark's peak, and its floating-point
work (counted as executed: every model of a group, padded widths, every epoch the group ran, forward and backward
of each update plus the per-epoch forward pass over the training set) against the machine's measured float32
matmul rate (numpy's BLAS on every core).
Figures are medians over --repeats timings. The last line is one JSON object.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainnets.training import cli
from trainnets.training import process

try:
  process.prepare_cpu()  # as train.py does: one JAX device per core, freed memory kept (for numpy and sklearn too)
except cli.UserError as e:
  cli.fail(str(e))

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import timing
from experiments import hidden_units as hidden_units_config
from nets import mlp
from trainnets.data import toy2d
from trainnets.training import models_last
from trainnets.training import sharding
from trainnets.training import vmap_sweep

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timings per figure; the median is reported.')
_MODELS = flags.DEFINE_list('models', ['1', '64', '256', '2048'], 'Numbers of models trained at once.')
_EPOCHS = flags.DEFINE_integer('epochs', 100, 'Epochs per timing of this codebase: by default a group of the default '
                                'run, whose examples the trainer draws once for all its epochs.')
_SKIP_FULL = flags.DEFINE_bool('skip_full_run', False, 'Do not time the default hidden_units experiment.')

N, WIDTH, ETA = 200, 10, 0.1


def jax_updates_per_s(x, y, num_models, epochs, repeats, layout):
  tx = optax.sgd(ETA)
  mesh = sharding.model_mesh(jax.devices()[:num_models])  # as trainnets/training/vmap_sweep.py shards the model axis
  epoch_fn, _ = vmap_sweep.make_epoch_fn(tx, activation='tanh', loss='hinge', parallel_tasks=False,  # as the trainer
                                         models_last_mesh=mesh if layout == 'models_last' else None)
  models = [vmap_sweep.Model('corner', (WIDTH,), 'lecture', s) for s in range(num_models)]
  params = jax.vmap(lambda k: mlp.init(k, (2, WIDTH, 1)))(jax.random.split(jax.random.PRNGKey(0), num_models))
  examples = vmap_sweep.Examples(models, N, N, 1, 'uniform', epochs, mesh)  # draws `epochs` epochs at a time
  data = {'x_train': jnp.broadcast_to(x, (num_models, N, 2)), 'y_train': jnp.broadcast_to(y, (num_models, N)),
          'masks': None, 'example_row': examples.rows}
  params, data = sharding.shard_models((params, data), mesh)
  opt = jax.jit(jax.vmap(tx.init))(params)
  active = sharding.shard_models(jnp.ones(num_models, bool), mesh)
  state = {'params': params, 'opt': opt, 'epoch': 0}

  def run():  # epochs not run before: each timing draws its epochs' examples, as the trainer does, then trains
    for _ in range(epochs):
      state['epoch'] += 1
      state['params'], state['opt'], m = epoch_fn(state['params'], state['opt'], examples(state['epoch']), active,
                                                  data)
    jax.block_until_ready(m)

  run()  # compile
  return num_models * N * epochs / timing.median_seconds(run, repeats)


def trainer_layout():
  """The layout the hidden-units trainer takes for these nets (its default config: train.layout=auto, per-example
  SGD); the benchmark times it first, and the other beside it."""
  return models_last.layout_for(hidden_units_config.get_config().train, (WIDTH,))


def numpy_updates_per_s(x, y, epochs, repeats):
  rng = np.random.default_rng(0)
  W = rng.normal(0, 0.5, (2, WIDTH))
  W0, V, V0 = np.zeros(WIDTH), rng.normal(0, 0.1, WIDTH), 0.0

  def run():
    nonlocal W, W0, V, V0
    for t in rng.integers(0, N, N * epochs):  # the lecture: a random example each step
      xt, yt = x[t], y[t]
      zj = xt @ W + W0
      fz = np.tanh(zj)
      if 1.0 - yt * (fz @ V + V0) > 0:  # Loss > 0: the hand-derived update
        g = ETA * yt * (1.0 - fz**2) * V
        V = V + ETA * yt * fz
        V0 = V0 + ETA * yt
        W = W + np.outer(xt, g)
        W0 = W0 + g

  return N * epochs / timing.median_seconds(run, repeats)


def sklearn_updates_per_s(x, y, epochs, repeats):
  from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415 (the peer, loaded only when timed)
  from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

  def run():
    clf = MLPClassifier(hidden_layer_sizes=(WIDTH,), activation='tanh', solver='sgd', batch_size=1,
                        learning_rate_init=ETA, momentum=0.0, alpha=0.0, max_iter=epochs, tol=0.0,
                        n_iter_no_change=10**6, random_state=0)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', ConvergenceWarning)
      clf.fit(x, y)
    assert clf.n_iter_ == epochs

  return N * epochs / timing.median_seconds(run, repeats)


def run_work(workdir):
  """(model-updates, FLOPs) a finished hidden_units workdir executed, from its metrics.jsonl and config.json.

  A group (depth, padded width) runs all its M models (stopped ones are computed and discarded) for every epoch
  it logged; an update of a net with padded layer sizes (2, p, ..., p, 1) costs 6 flops per weight (forward,
  and backward to activations and weights), and each epoch's evaluation of the training set 2 per weight per
  example. Biases and activations are left out (under 10% at these widths)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  steps, n = config['data']['num_train'] // config['train']['batch_size'], config['data']['num_train']
  groups = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for row in map(json.loads, f):
      if 'depth' in row:
        g = groups.setdefault((row['depth'], row['padded_width']), {'models': row['models_training'], 'epochs': 0})
        g['epochs'] += 1
  updates = flops = 0
  for (depth, pad), g in groups.items():
    sizes = (2, *[pad] * depth, 1)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    updates += g['models'] * g['epochs'] * steps * config['train']['batch_size']
    flops += g['models'] * g['epochs'] * (6 * weights * steps * config['train']['batch_size'] + 2 * weights * n)
  return updates, flops


def matmul_flops_per_s(repeats, n=2048):
  """The machine's float32 matmul rate: numpy's BLAS on an n x n product, every core."""
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  a @ a  # warm-up: threads started, pages touched
  return 2 * n**3 / timing.median_seconds(lambda: a @ a, repeats)


def full_run():
  """(wall seconds, results.json, model-updates, FLOPs) of the default hidden_units run in a new workdir, every
  program compiled (COMPILATION_CACHE=0), as on a first run."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    subprocess.run([sys.executable, 'train.py', '--config=experiments/hidden_units.py', f'--workdir={d}/run'],
                   cwd=root, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, COMPILATION_CACHE='0'))
    seconds = time.perf_counter() - t
    with open(os.path.join(d, 'run', 'results.json')) as f:
      results = json.load(f)
    return (seconds, results, *run_work(os.path.join(d, 'run')))


def main(argv):
  del argv
  (x, y), _ = toy2d.train_test(0, 'corner', N, 10)
  xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
  repeats = _REPEATS.value
  numpy_ups = numpy_updates_per_s(xn, yn, 2, repeats)
  print(f'numpy loop (1 model):          {numpy_ups:12,.0f} updates/s', flush=True)
  sklearn_ups = sklearn_updates_per_s(xn, yn, 2, repeats)
  print(f'scikit-learn MLPClassifier:    {sklearn_ups:12,.0f} updates/s', flush=True)
  layout = trainer_layout()
  other = 'models_first' if layout == 'models_last' else 'models_last'
  by_models, by_other = {}, {}
  for m in map(int, _MODELS.value):
    for name, out in ((layout, by_models), (other, by_other)):
      out[m] = jax_updates_per_s(x, y, m, _EPOCHS.value, repeats, name)
      print(f'this codebase, {m:5d} models, {name + ":":13s} {out[m]:12,.0f} updates/s  '
            f'({out[m] / numpy_ups:7.1f}x numpy, {out[m] / sklearn_ups:8.1f}x scikit-learn)', flush=True)
  headline = max(by_models)
  result = {
      'updates_per_s': round(by_models[headline]), 'models': headline,
      'numpy_updates_per_s': round(numpy_ups), 'sklearn_updates_per_s': round(sklearn_ups),
      'x_numpy': round(by_models[headline] / numpy_ups, 1), 'x_sklearn': round(by_models[headline] / sklearn_ups, 1),
      'updates_per_s_by_models': {str(k): round(v) for k, v in by_models.items()}, 'layout': layout,
      f'{other}_updates_per_s_by_models': {str(k): round(v) for k, v in by_other.items()},
      'repeats': repeats, 'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
      'cpu_count': os.cpu_count(), 'machine': platform.machine(), 'python': platform.python_version(),
  }
  if not _SKIP_FULL.value:
    seconds, results, updates, flops = full_run()
    matmul = matmul_flops_per_s(repeats)
    result.update({
        'hidden_units_default_run_s': round(seconds, 1), 'hidden_units_train_s': results['train_time_s'],
        'run_model_updates': updates, 'run_updates_per_s_wall': round(updates / seconds),
        'run_updates_per_s_training': round(updates / results['train_time_s']),
        'peak_updates_per_s': round(max(by_models.values())),
        'run_gflop': round(flops / 1e9, 1), 'matmul_gflop_per_s': round(matmul / 1e9, 1),
        'run_s_at_matmul_rate': round(flops / matmul, 2), 'x_from_matmul_limit': round(seconds * matmul / flops, 1)})
    print(f'default hidden_units run:      {seconds:.1f} s (compilation included; '
          f'training {results["train_time_s"]} s), '
          f'{updates:,} model-updates: {updates / seconds:,.0f}/s of wall time, '
          f'{updates / results["train_time_s"]:,.0f}/s of training (peak above: {max(by_models.values()):,.0f}/s)')
    print(f'its work: {flops / 1e9:.1f} GFLOP; at the measured matmul rate ({matmul / 1e9:.1f} GFLOP/s) '
          f'{flops / matmul:.2f} s, {seconds * matmul / flops:.0f}x under the run\'s wall time')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
