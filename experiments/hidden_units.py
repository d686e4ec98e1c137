"""The lecture's hidden-unit experiments on 2-D tasks: what hidden units, depth and initialisation do.

Command (the README's `make reproduce` runs exactly this):
  python train.py --config=experiments/hidden_units.py --workdir=workdirs/hidden_units
  python train.py --config=experiments/hidden_units.py:quick --workdir=/tmp/hu_quick   # seconds, for a smoke test

Runtime: about 40 s on 2 CPU cores (compilation included); `quick` about 10 s.

What it trains: tanh nets with per-example SGD on the hinge loss (the lecture's algorithm: a random example each
step, eta_k = eta_0 / (1 + k / 2000), eta_0 = 1 for one hidden layer and 0.3 for deeper nets), on the 2-D tasks of data/toy2d.py, 16 seeds per setting, for
hidden units 1..32 at depths 1..3, the single-layer (linear) net, and all-zero initialisation. Every setting of
one depth is one compiled program (vmap over models, scan over examples).

Expected results (written to results.md; the numbers are measured on every run):
  - corner, 2 units: zero training loss for (nearly) every seed by epoch ~10; 10 units likewise.
  - stripes: 2 units stay near 79% training accuracy for every seed; 10 units reach 100%.
  - accuracy rises with hidden units on every task; the linear net fits none of them.
  - all-zero init: W and V never move (only V0 does); accuracy stays at the majority-class rate.
"""
import dataclasses
import functools
import json
import os
import time
import zipfile

import jax
import ml_collections
import numpy as np

from data import toy2d
from errors import ConfigError
from errors import WorkdirError
from experiments import hidden_units_report as report
from nets import activations
from nets import init as init_lib
from nets import losses
from nets import mlp
from training import metrics as metrics_lib
from training import optim
from training import vmap_sweep
from training import workdir as workdir_lib

ARGS = ('quick',)


def get_config(arg=None):
  """Default: the full reproduction. `quick`: 2 tasks, widths 2 and 10, depth 1, 4 seeds, 12 epochs."""
  args = set(filter(None, (arg or '').split(',')))
  if args - set(ARGS):
    raise ValueError(f'unknown argument(s) {sorted(args - set(ARGS))} for hidden_units.py; use one of {ARGS}')
  c = ml_collections.ConfigDict()
  c.experiment = 'hidden_units'
  c.trainer = 'hidden_units'
  c.seed = 0  # model seeds are seed, seed + 1, ..., seed + num_seeds - 1
  c.num_seeds = 16

  c.data = ml_collections.ConfigDict()
  c.data.tasks = toy2d.TASKS
  c.data.num_train = 200
  c.data.num_test = 1000
  c.data.margin = 0.05  # points this close to the true boundary are redrawn
  c.data.seed = 0  # the datasets are the same for every model seed

  c.model = ml_collections.ConfigDict()
  c.model.activation = 'tanh'
  c.model.hidden_units = (1, 2, 3, 4, 6, 8, 10, 16, 32)
  c.model.depths = (1, 2, 3)  # hidden layers, each of the swept width
  c.model.include_linear = True  # also train the single-layer net (no hidden layer)
  c.model.weight_init = 'lecture'  # N(0, 1/d^2); see nets/init.py
  c.model.weight_std = 0.1  # used by weight_init='normal'
  c.model.offset_init = 'zeros'  # the lecture's figures use zero offsets
  c.model.offset_std = 0.1  # used by offset_init='normal'

  c.train = ml_collections.ConfigDict()
  c.train.loss = 'hinge'
  c.train.batch_size = 1  # 1: the lecture's per-example SGD; more: minibatch SGD
  c.train.sampling = 'uniform'  # 'uniform': a random example each step; 'permutation': shuffled passes
  c.train.epochs = 100  # an epoch is num_train / batch_size steps
  c.train.stop_at_zero_loss = True
  c.train.learning_rate = 1.0  # eta_0 for the linear and one-hidden-layer nets
  # eta_0 for nets of 2+ hidden layers: per-example steps of 1.0 make them diverge (measured: median accuracy
  # falls to the majority class at depth 3), 0.3 trains them; 0.3 in turn is too slow for depth 1 within 100
  # epochs. One step size for every depth would hide what depth does behind a badly tuned rate.
  c.train.deep_learning_rate = 0.3
  c.train.lr_schedule = 'inverse_time'
  c.train.lr_decay_steps = 2000
  c.train.momentum = 0.0
  c.train.unroll = 1  # lax.scan unroll factor (speed only)
  # Speed only: each width is padded to the smallest of these that holds it, one compiled program per (depth,
  # padded width); a 1-unit net then costs a 10-wide one, not a 32-wide one. Results do not depend on it.
  c.train.pad_widths = (10, 32)

  c.claims = ml_collections.ConfigDict()
  c.claims.easy_task = 'corner'
  c.claims.hard_task = 'stripes'
  c.claims.few_units = 2
  c.claims.many_units = 10
  c.claims.at_epoch = 10  # "after about 10 epochs"
  c.claims.zero_init = True  # also train all-zero-initialised nets on the two claim tasks

  if 'quick' in args:
    c.num_seeds = 4
    c.data.tasks = ('corner', 'stripes')
    c.data.num_train = 100
    c.data.num_test = 200
    c.model.hidden_units = (2, 10)
    c.model.depths = (1,)
    c.train.epochs = 12
    c.train.lr_decay_steps = 1000
  return c


def validate(c):
  """Raises ConfigError naming the first bad value and what to pass instead."""

  def need(ok, message):
    if not ok:
      raise ConfigError(message)

  need(c.num_seeds >= 1, f'num_seeds must be >= 1, got {c.num_seeds}')
  need(len(c.data.tasks) >= 1 and set(c.data.tasks) <= set(toy2d.TASKS),
       f'data.tasks {tuple(c.data.tasks)} must be a non-empty subset of {toy2d.TASKS}')
  need(c.data.num_test >= 1, f'data.num_test must be >= 1, got {c.data.num_test}')
  need(c.data.num_train >= c.train.batch_size >= 1,
       f'need data.num_train >= train.batch_size >= 1, got {c.data.num_train} and {c.train.batch_size}')
  need(0 <= c.data.margin <= 0.1, f'data.margin must be in [0, 0.1], got {c.data.margin}')
  need(len(c.model.hidden_units) >= 1 and all(int(w) == w and w >= 1 for w in c.model.hidden_units),
       f'model.hidden_units must be whole numbers >= 1, got {tuple(c.model.hidden_units)}')
  need(len(c.model.depths) >= 1 and all(int(d) == d and d >= 1 for d in c.model.depths),
       f'model.depths must be whole numbers >= 1 (the linear net is model.include_linear), got '
       f'{tuple(c.model.depths)}')
  need(c.model.activation in activations.ACTIVATIONS,
       f'model.activation {c.model.activation!r} is unknown; choose one of {sorted(activations.ACTIVATIONS)}')
  need(c.model.weight_init in init_lib.WEIGHT_INITS,
       f'model.weight_init {c.model.weight_init!r} is unknown; choose one of {init_lib.WEIGHT_INITS}')
  need(c.model.offset_init in init_lib.OFFSET_INITS,
       f'model.offset_init {c.model.offset_init!r} is unknown; choose one of {init_lib.OFFSET_INITS}')
  need(c.model.weight_std > 0 and c.model.offset_std > 0, 'model.weight_std and model.offset_std must be > 0')
  need(c.train.loss in losses.BINARY_LOSSES,
       f'train.loss {c.train.loss!r} is unknown; choose one of {sorted(losses.BINARY_LOSSES)}')
  need(c.train.sampling in vmap_sweep.SAMPLINGS,
       f'train.sampling {c.train.sampling!r} is unknown; choose one of {vmap_sweep.SAMPLINGS}')
  need(c.train.epochs >= 1, f'train.epochs must be >= 1, got {c.train.epochs}')
  need(c.train.unroll >= 1, f'train.unroll must be >= 1, got {c.train.unroll}')
  need(all(p >= 1 for p in c.train.pad_widths), f'train.pad_widths must be >= 1, got {tuple(c.train.pad_widths)}')
  need(c.train.deep_learning_rate > 0, f'train.deep_learning_rate must be > 0, got {c.train.deep_learning_rate}')
  optim.optimizer(c.train)  # checks learning rate, schedule and momentum
  need(c.claims.easy_task in c.data.tasks and c.claims.hard_task in c.data.tasks,
       f'claims.easy_task and claims.hard_task must be among data.tasks {tuple(c.data.tasks)}')
  need({c.claims.few_units, c.claims.many_units} <= set(c.model.hidden_units) and 1 in c.model.depths,
       f'claims.few_units and claims.many_units must be in model.hidden_units {tuple(c.model.hidden_units)}, '
       'and model.depths must include 1')
  need(1 <= c.claims.at_epoch <= c.train.epochs,
       f'claims.at_epoch must be in [1, train.epochs={c.train.epochs}], got {c.claims.at_epoch}')


def train_config_for_depth(c, depth):
  """config.train with the step size of nets of `depth` hidden layers (deep_learning_rate from depth 2)."""
  t = ml_collections.ConfigDict(c.train.to_dict())
  if depth >= 2:
    t.learning_rate = c.train.deep_learning_rate
  return t


def models_for(c):
  """Every model of the sweep, grouped into compiled programs: {(depth, padded width): [Model, ...]}."""
  seeds = range(c.seed, c.seed + c.num_seeds)
  models = [vmap_sweep.Model(t, (), c.model.weight_init, s)
            for t in c.data.tasks for s in seeds] if c.model.include_linear else []
  models += [vmap_sweep.Model(t, (w,) * d, c.model.weight_init, s)
             for d in c.model.depths for t in c.data.tasks for w in c.model.hidden_units for s in seeds]
  if c.claims.zero_init and c.model.weight_init != 'zeros':
    models += [vmap_sweep.Model(t, (w,), 'zeros', s)
               for t in (c.claims.easy_task, c.claims.hard_task)
               for w in (c.claims.few_units, c.claims.many_units) for s in seeds]
  groups = {}
  for m in models:
    width = m.hidden[0] if m.hidden else 0
    pad = min([p for p in c.train.pad_widths if p >= width], default=width)
    groups.setdefault((m.depth, pad if m.hidden else 0), []).append(m)
  return dict(sorted(groups.items()))


PARAMS_FILE = 'params.npz'


def save_params(path, runs):
  """Every model's final parameters: per run k, its stacked leaves `k/i` in tree order and its models."""
  arrays = {}
  for k, run in enumerate(runs):
    for i, leaf in enumerate(jax.tree.leaves(run['params'])):
      arrays[f'{k}/{i}'] = leaf
    arrays[f'{k}/models'] = np.asarray([json.dumps(dataclasses.asdict(m)) for m in run['models']])
    arrays[f'{k}/padded'] = np.asarray(run['padded'], np.int32)
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def load_params(path):
  """[(models, stacked params)] as save_params wrote them."""
  with np.load(path) as f:
    runs, k = [], 0
    while f'{k}/models' in f:
      models = [vmap_sweep.Model(**{**d, 'hidden': tuple(d['hidden'])}) for d in map(json.loads, f[f'{k}/models'])]
      padded = tuple(int(p) for p in f[f'{k}/padded'])
      template = jax.eval_shape(lambda: mlp.init(jax.random.PRNGKey(0), (2, *padded, 1)))
      leaves = [f[f'{k}/{i}'] for i in range(len(jax.tree.leaves(template)))]
      runs.append((models, padded, jax.tree.unflatten(jax.tree.structure(template), leaves)))
      k += 1
  return runs


def evaluate(config, workdir, step=None, fresh_points=0):
  """Re-evaluates every saved model on the test split (or on `fresh_points` new points per task).

  On the test split the numbers must equal results.json's; a mismatch means the saved parameters or the data
  generation changed since training, and is reported as an error.
  """
  if step is not None:
    raise ConfigError('--step applies to checkpointed experiments; hidden_units keeps only final parameters')
  if fresh_points < 0:
    raise ConfigError(f'--fresh_points must be >= 0 (0: the test split), got {fresh_points}')
  path = os.path.join(workdir, PARAMS_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{workdir} has no {PARAMS_FILE}: train first with python train.py '
                       f'--config=experiments/hidden_units.py --workdir={workdir}')
  try:
    saved_runs = load_params(path)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise WorkdirError(f'{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else "truncated"})'
                       f'; train again into a new --workdir') from None
  saved = None
  if not fresh_points:  # read before evaluating, so a damaged results.json costs no work
    saved = workdir_lib.read_json(os.path.join(workdir, 'results.json')).get('records')
    if not isinstance(saved, list):
      raise WorkdirError(f'{workdir}/results.json holds no records; train again into a new --workdir')
  workdir_lib.lock(workdir)  # the inputs are sound: from here on this process writes the workdir
  which, n = (toy2d.FRESH, fresh_points) if fresh_points else (toy2d.TEST, config.data.num_test)
  datasets = {t: toy2d.draw(config.data.seed, t, which, n, config.data.margin) for t in config.data.tasks}
  rows = []
  for models, padded, params in saved_runs:
    x = np.stack([datasets[m.task][0] for m in models])
    y = np.stack([datasets[m.task][1] for m in models])
    one = functools.partial(vmap_sweep.evaluate, activation=config.model.activation, loss=config.train.loss)
    _, acc = jax.jit(jax.vmap(one))(params, x, y, vmap_sweep.masks_for(models, padded))
    rows += [(m, float(a)) for m, a in zip(models, np.asarray(acc))]
  split = f'{fresh_points} fresh points' if fresh_points else 'test split'
  fields = ('task', 'hidden_units', 'depth', 'init', 'seed')
  out = {'split': split, 'records': [
      {'task': m.task, 'hidden_units': m.hidden[0] if m.hidden else 0, 'depth': m.depth, 'init': m.init,
       'seed': m.seed, 'test_accuracy': a} for m, a in rows]}
  if not fresh_points:
    key = lambda r: tuple(r.get(f) for f in fields)
    expected = {key(r): r.get('test_accuracy') for r in saved if isinstance(r, dict)}
    got = {key(r): r['test_accuracy'] for r in out['records']}
    if any(not isinstance(expected.get(k), (int, float)) for k in got):
      raise WorkdirError(f'{workdir}/results.json does not record every saved model\'s test accuracy; train again '
                         'into a new --workdir')
    worst = max(abs(expected[k] - got[k]) for k in got)
    out['max_abs_diff_vs_results_json'] = worst
    if worst > 1e-6:
      raise WorkdirError(f'saved parameters give test accuracies up to {worst:.4f} away from results.json: the '
                         'workdir was changed or the code changed since training; retrain into a new --workdir')
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), out)
  by_setting = {}
  for r in out['records']:
    by_setting.setdefault(tuple(r[f] for f in fields[:4]), []).append(r['test_accuracy'])
  print(f'median test accuracy over seeds on the {split} ({len(rows)} models):')
  for (t, w, d, init), accs in sorted(by_setting.items()):
    print(f'  {t:8s} depth {d} {w:3d} units {init:8s} {np.median(accs):.3f}')
  return out


def train_and_evaluate(config, workdir):
  """Runs the whole sweep and writes config.json, metrics.jsonl, results.json, results.md, figures/ to workdir."""
  validate(config)
  workdir_lib.prepare(workdir, config)
  start = time.time()
  datasets = {t: toy2d.train_test(config.data.seed, t, config.data.num_train, config.data.num_test,
                                  config.data.margin) for t in config.data.tasks}
  groups = models_for(config)
  writer = metrics_lib.MetricsWriter(workdir)
  snapshot_epochs = (0, config.claims.at_epoch)
  runs = []
  bar = metrics_lib.progress(len(groups) * config.train.epochs, 'hidden units sweep')
  done_epochs = 0
  for (depth, pad), models in groups.items():
    bar.set_description(f'depth {depth}, width <= {pad}: {len(models)} models')

    def on_epoch(epoch, m, active, depth=depth, pad=pad, base=done_epochs):
      writer.write(base + epoch, depth=depth, padded_width=pad, epoch=epoch, models_training=int(active.sum()),
                   train_loss_mean=float(m['train_loss'].mean()),
                   train_accuracy_mean=float(m['train_accuracy'].mean()))
      bar.update(1)

    train_cfg = train_config_for_depth(config, depth)
    run = vmap_sweep.train(models, datasets, config.model, train_cfg, optim.optimizer(train_cfg),
                           snapshot_epochs=snapshot_epochs, on_epoch=on_epoch)
    runs.append({**run, 'models': models, 'depth': depth})
    bar.update(config.train.epochs - (bar.n - done_epochs))  # epochs skipped by an early stop
    done_epochs += config.train.epochs
  bar.close()
  train_time = time.time() - start

  records = report.records(runs, config)
  results = {
      'experiment': config.experiment,
      'train_time_s': round(train_time, 2),
      'num_models': len(records),
      'devices': [str(d) for d in jax.devices()],
      'claims': report.claims(records, runs, config, datasets),
      'records': records,
  }
  np.savez_compressed(os.path.join(workdir, 'curves.npz'),
                      **{f'{k}_depth{r["depth"]}_width{r["padded"][0] if r["padded"] else 0}': v
                         for r in runs for k, v in r['curves'].items()})
  save_params(os.path.join(workdir, PARAMS_FILE), runs)
  results['figures'] = report.figures(runs, datasets, config, os.path.join(workdir, 'figures'))
  results['wall_time_s'] = round(time.time() - start, 2)
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  workdir_lib.write_text(os.path.join(workdir, 'results.md'), report.markdown(results, config))
  print(report.summary(results))
  return results
