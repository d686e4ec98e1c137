"""Per-example SGD throughput: this codebase against a numpy loop and scikit-learn, in one run on one machine.

  python benchmarks/toy_sgd.py [--repeats=5] [--models=1,64,256,2048] [--skip_full_run]

All three train a 2-10-1 tanh net by per-example SGD (batch size 1, constant step 0.1, no momentum) on the
`corner` task (200 points) and are timed over whole epochs:
  - this codebase: trainnets/training/vmap_sweep.py's compiled epoch (lax.scan over examples, vmap over M models, the
    model axis sharded over one JAX device per core), timed after compilation; an update is one model's step on
    one example, so M models do M updates per step;
  - numpy: a Python loop of the lecture's two-layer update (nets/backprop.py's equations), one model;
  - scikit-learn: MLPClassifier(solver='sgd', batch_size=1), one model (its loss is the logistic loss).
It also times the whole default hidden_units experiment (compilation and figures included) unless
--skip_full_run. Figures are medians over --repeats timings. The last line is one JSON object.
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
from nets import mlp
from trainnets.data import toy2d
from trainnets.training import sharding
from trainnets.training import vmap_sweep

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timings per figure; the median is reported.')
_MODELS = flags.DEFINE_list('models', ['1', '64', '256', '2048'], 'Numbers of models trained at once.')
_EPOCHS = flags.DEFINE_integer('epochs', 5, 'Epochs per timing of this codebase.')
_SKIP_FULL = flags.DEFINE_bool('skip_full_run', False, 'Do not time the default hidden_units experiment.')

N, WIDTH, ETA = 200, 10, 0.1


def jax_updates_per_s(x, y, num_models, epochs, repeats):
  tx = optax.sgd(ETA)
  epoch_fn, _ = vmap_sweep.make_epoch_fn(tx, activation='tanh', loss='hinge', batch_size=1, steps=N,
                                         sampling='uniform')
  mesh = sharding.model_mesh(jax.devices()[:num_models])  # as trainnets/training/vmap_sweep.py shards the model axis
  keys = jax.random.split(jax.random.PRNGKey(0), num_models)
  params = jax.vmap(lambda k: mlp.init(k, (2, WIDTH, 1)))(keys)
  data = {'x_train': jnp.broadcast_to(x, (num_models, N, 2)), 'y_train': jnp.broadcast_to(y, (num_models, N)),
          'masks': None}
  params, keys, data = sharding.shard_models((params, keys, data), mesh)
  opt = jax.jit(jax.vmap(tx.init))(params)
  active = sharding.shard_models(jnp.ones(num_models, bool), mesh)
  state = {'params': params, 'opt': opt}

  def run():
    for e in range(epochs):
      state['params'], state['opt'], m = epoch_fn(state['params'], state['opt'], keys, active, e, data)
    jax.block_until_ready(m)

  state['params'], state['opt'], m = epoch_fn(params, opt, keys, active, 0, data)  # compile
  jax.block_until_ready(m)
  return num_models * N * epochs / timing.median_seconds(run, repeats)


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


def full_run_seconds():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    subprocess.run([sys.executable, 'train.py', '--config=experiments/hidden_units.py', f'--workdir={d}/run'],
                   cwd=root, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv):
  del argv
  (x, y), _ = toy2d.train_test(0, 'corner', N, 10)
  xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
  repeats = _REPEATS.value
  numpy_ups = numpy_updates_per_s(xn, yn, 2, repeats)
  print(f'numpy loop (1 model):          {numpy_ups:12,.0f} updates/s', flush=True)
  sklearn_ups = sklearn_updates_per_s(xn, yn, 2, repeats)
  print(f'scikit-learn MLPClassifier:    {sklearn_ups:12,.0f} updates/s', flush=True)
  by_models = {}
  for m in map(int, _MODELS.value):
    by_models[m] = jax_updates_per_s(x, y, m, _EPOCHS.value, repeats)
    print(f'this codebase, {m:5d} models:   {by_models[m]:12,.0f} updates/s  '
          f'({by_models[m] / numpy_ups:7.1f}x numpy, {by_models[m] / sklearn_ups:8.1f}x scikit-learn)', flush=True)
  headline = max(by_models)
  result = {
      'updates_per_s': round(by_models[headline]), 'models': headline,
      'numpy_updates_per_s': round(numpy_ups), 'sklearn_updates_per_s': round(sklearn_ups),
      'x_numpy': round(by_models[headline] / numpy_ups, 1), 'x_sklearn': round(by_models[headline] / sklearn_ups, 1),
      'updates_per_s_by_models': {str(k): round(v) for k, v in by_models.items()},
      'repeats': repeats, 'jax': jax.__version__, 'devices': [str(d) for d in jax.devices()],
      'cpu_count': os.cpu_count(), 'machine': platform.machine(), 'python': platform.python_version(),
  }
  if not _SKIP_FULL.value:
    result['hidden_units_default_run_s'] = round(full_run_seconds(), 1)
    print(f'default hidden_units run:      {result["hidden_units_default_run_s"]} s (compilation included)')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
