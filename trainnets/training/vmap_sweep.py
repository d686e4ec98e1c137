"""Train many small binary classifiers at once: one compiled program per call, vmapped over models.

A model is (task, hidden widths, weight init, seed). The models of one call share a depth; they are padded to the
largest width of each layer and masked (see nets/mlp.py), stacked along a leading model axis M, and trained
together. One epoch is one jitted call: per-example (or minibatch) SGD as a `lax.scan` over steps, vmapped over the
M models, with gradients from `jax.grad` handed to optax. Python only loops over epochs, to log, draw the progress
bar and stop early once every model has reached zero training loss.

Randomness: model seed s gives init key fold_in(PRNGKey(s), 0) and sampling key fold_in(PRNGKey(s), 1); epoch e
samples with fold_in(sampling key, e). The same seed therefore gives the same initial weights (for the same
width) and the same sequence of examples across tasks and widths, so a comparison between widths differs only in
the width. The sequence of examples is drawn apart from the epoch program (Examples), once per distinct seed: the
random generator is integer arithmetic, so its draws are the same bits wherever they are computed, and the epoch
programs need not compile it.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import losses
from nets import mlp
from trainnets import quick_compile
from trainnets.training import models_last
from trainnets.training import sharding

SAMPLINGS = ('uniform', 'permutation')
NO_PARALLEL_TASKS = {'xla_disable_hlo_passes': 'cpu-parallel-task-assigner'}  # XLA:CPU's compile options
EXAMPLES_PER_DRAW = 2**22  # example indices Examples draws at once (16 MiB): every epoch's, for a toy sweep


@dataclasses.dataclass(frozen=True)
class Model:
  task: str
  hidden: tuple  # widths of the hidden layers; () is the single-layer (linear) net
  init: str  # weight init scheme, see nets/init.py
  seed: int
  data_seed: int | None = None  # None: the task's shared data set; else this model's own draw of the task

  @property
  def depth(self):
    return len(self.hidden)

  @property
  def dataset(self):
    """The key of this model's data set in `datasets`: the task, or (task, data seed)."""
    return self.task if self.data_seed is None else (self.task, self.data_seed)


def _scores(params, x_BxD, masks, activation):
  return mlp.apply(params, x_BxD, activation=activation, unit_masks=masks)[:, 0]


def loss_and_accuracy(params, x_NxD, y_N, masks, *, activation, loss):
  """(mean loss, accuracy) of one model on (x, y); vmap it over models."""
  z_N = _scores(params, x_NxD, masks, activation)
  return losses.get_binary(loss)(z_N, y_N).mean(), (jnp.where(z_N > 0, 1.0, -1.0) == y_N).mean()


def masks_for(models, padded):
  """Per hidden layer, the [M, padded width] 0/1 masks of the models' real units."""
  widths_MxL = np.asarray([m.hidden for m in models]).reshape(len(models), len(padded))
  return mlp.unit_masks_for(widths_MxL.T, padded)


def _per_model(tx):
  """`tx` as a function of a model's eta_0: itself if it is one, else the same transformation for every model."""
  return tx if callable(tx) else lambda eta0: tx


def make_epoch_fn(tx, *, activation, loss, unroll=1, parallel_tasks=True, models_last_mesh=None):
  """Jitted functions epoch_fn(params_M, opt_M, (examples, k), active_M, data) -> (params_M, opt_M, train metrics)
  and measure(params_M, data) -> the metrics of both splits, training and test, in one program (one compilation
  for both).

  examples [S, K, steps, batch]: training example indices, step by step, of S seeds and K epochs (Examples); the
  epoch is the k-th, model m steps through row data['example_row'][m].
  `tx`: one optax transformation for every model, or a function eta_0 -> transformation, called on each model's
  own step size data['learning_rate'][m] (a runtime value, so models of other step sizes share the program).
  `parallel_tasks=False`: on the CPU, both programs compiled without XLA's parallel task assigner (the same values;
  faster with one JAX device per core, experiments/hidden_units.py's train.parallel_tasks). `models_last_mesh`:
  the mesh of the model axis, to train the epoch with the model axis last (models_last.make_train_step, the same
  bits) in place of the vmapped step."""
  loss_fn = losses.get_binary(loss)
  tx_for = _per_model(tx)

  def objective(params, x_BxD, y_B, masks):
    return loss_fn(_scores(params, x_BxD, masks, activation), y_B).mean()

  def model_epoch(params, opt_state, idx_SxB, x_NxD, y_N, masks, eta0):
    tx = tx_for(eta0)

    def step(carry, idx_B):
      params, opt_state = carry
      grads = jax.grad(objective)(params, x_NxD[idx_B], y_N[idx_B], masks)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx_SxB, unroll=unroll)
    return params, opt_state

  def evaluate_split(params_M, data, split):
    one = functools.partial(loss_and_accuracy, activation=activation, loss=loss)
    loss_M, acc_M = jax.vmap(one)(params_M, data[f'x_{split}'], data[f'y_{split}'], data['masks'])
    return {f'{split}_loss': loss_M, f'{split}_accuracy': acc_M}

  options = None if parallel_tasks or jax.default_backend() != 'cpu' else NO_PARALLEL_TASKS
  train_step = None if models_last_mesh is None else models_last.make_train_step(
      tx_for, models_last_mesh, activation=activation, loss=loss)

  @functools.partial(jax.jit, donate_argnums=(0, 1), compiler_options=options)
  def epoch_fn(params_M, opt_M, examples, active_M, data):
    if train_step is not None:
      new_params, new_opt = train_step(params_M, opt_M, examples, data)
    else:
      drawn, k = examples
      examples_M = drawn[data['example_row'], k]
      new_params, new_opt = jax.vmap(model_epoch)(params_M, opt_M, examples_M, data['x_train'], data['y_train'],
                                                  data['masks'], data.get('learning_rate'))

    def keep_if_stopped(new, old):  # a stopped model keeps its parameters and optimiser state
      return jnp.where(active_M.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    params_M = jax.tree.map(keep_if_stopped, new_params, params_M)
    opt_M = jax.tree.map(keep_if_stopped, new_opt, opt_M)
    return params_M, opt_M, evaluate_split(params_M, data, 'train')

  def measure(params_M, data):
    return {**evaluate_split(params_M, data, 'train'), **evaluate_split(params_M, data, 'test')}

  return epoch_fn, jax.jit(measure, compiler_options=options)


class Programs:
  """The jitted functions of one training set-up (tx, the model and training configs): `epoch`
  and `measure` as make_epoch_fn makes them, `init_opt`, the vmapped optimiser init, and `epoch_for(padded, mesh)`,
  the epoch of a group padded to those hidden widths on that mesh, in the layout train.layout picks for it (layout_for:
  `epoch` itself, or the same epoch with the model axis last, the same bits). Passed to several train calls, their
  compilations are reused wherever the shapes agree (a sweep's runs of other step sizes or seeds)."""

  def __init__(self, tx, model_cfg, train_cfg):
    self._make = functools.partial(make_epoch_fn, tx, activation=model_cfg.activation, loss=train_cfg.loss,
                                   parallel_tasks=train_cfg.parallel_tasks)
    self.epoch, self.measure = self._make(unroll=train_cfg.unroll)
    tx_for = _per_model(tx)
    self.init_opt = jax.jit(jax.vmap(lambda p, eta0: tx_for(eta0).init(p)))
    self._train_cfg = train_cfg
    self._epochs_models_last = {}  # mesh -> epoch

  def epoch_for(self, padded, mesh):
    if models_last.layout_for(self._train_cfg, padded) == 'models_first':
      return self.epoch
    if mesh not in self._epochs_models_last:
      self._epochs_models_last[mesh] = self._make(models_last_mesh=mesh)[0]
    return self._epochs_models_last[mesh]


@quick_compile.jit
def _keys_of_seeds(seeds, stream):
  return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), stream))(seeds)


def _distinct_seed_keys(models, stream):
  """The keys fold_in(PRNGKey(seed), stream) of the models' distinct seeds, [S, 2] uint32 numpy (S padded to a
  multiple of 64 with seed 0's), and each model's row in it. One compiled program computes them (the stream an
  input; integer arithmetic: the same bits however many are computed together)."""
  seeds, row_of = np.unique(np.asarray([m.seed for m in models], np.uint32), return_inverse=True)
  padded = np.zeros(-(-len(seeds) // 64) * 64, np.uint32)
  padded[:len(seeds)] = seeds
  return np.asarray(_keys_of_seeds(padded, np.uint32(stream))), row_of.reshape(-1)


def _seed_keys(models, stream):
  """Key fold_in(PRNGKey(seed), stream) of every model, stacked: [M, 2] uint32, numpy; each distinct seed's
  computed once."""
  keys, row_of = _distinct_seed_keys(models, stream)
  return keys[row_of]


@quick_compile.jit(static_argnames=('epochs', 'n', 'steps', 'batch_size', 'sampling'))
def _draw_examples(keys_Sx2, first, *, epochs, n, steps, batch_size, sampling):
  def one(key, epoch):
    key = jax.random.fold_in(key, epoch)
    if sampling == 'uniform':  # the lecture: a random example each step, with replacement
      return jax.random.randint(key, (steps, batch_size), 0, n)
    return jax.random.permutation(key, n)[:steps * batch_size].reshape(steps, batch_size)  # one pass, shuffled

  # one vmap over every (seed, epoch) pair (a vmap in a vmap compiles slower), seed-major, so that the seeds'
  # split over the devices carries over to the result
  num_seeds = keys_Sx2.shape[0]
  epoch_P = jnp.tile(first + jnp.arange(epochs), num_seeds)
  drawn_P = jax.vmap(one)(jnp.repeat(keys_Sx2, epochs, axis=0), epoch_P)
  return drawn_P.reshape(num_seeds, epochs, steps, batch_size)


class Examples:
  """Which training examples the models step through. examples(epoch) is (drawn, k): drawn [S, K, steps,
  batch_size] int32 holds the example indices of every step of K epochs, epoch's the k-th, for each of the models'
  S distinct seeds (padded to a multiple of 64 and of the device count), placed whole on every device of `mesh`;
  `rows` [M] int32 is each model's row in it (the epoch program's data['example_row']). Seed s draws epoch e's
  from fold_in(sampling key, e), sampling key fold_in(PRNGKey(s), 1) ('uniform': a random example each step;
  'permutation': one pass over a fresh permutation of the n examples), so models of one seed step through the same
  examples whatever their task or width. One compiled program draws K epochs at once (every epoch, or as many as
  EXAMPLES_PER_DRAW indices hold), each device its share of the seeds, for every group of models whose seeds pad to
  the same count, of the same n and steps."""

  def __init__(self, models, n, steps, batch_size, sampling, epochs, mesh):
    keys, rows = _distinct_seed_keys(models, 1)
    self.rows = rows.astype(np.int32)
    keys = np.pad(keys, [(0, sharding.padded_count(len(keys), mesh) - len(keys)), (0, 0)])
    self._keys = sharding.shard_models(keys, mesh)
    self._everywhere = sharding.replicated(mesh)
    per_epoch = len(keys) * steps * batch_size
    self._static = {'epochs': min(epochs, max(1, EXAMPLES_PER_DRAW // per_epoch)), 'n': n, 'steps': steps,
                    'batch_size': batch_size, 'sampling': sampling}
    self._first, self._drawn = None, None

  def __call__(self, epoch):
    if epoch < 1:
      raise ValueError(f'epochs count from 1, got {epoch}')
    first = epoch - (epoch - 1) % self._static['epochs']
    if first != self._first:  # drawn split over the devices, then copied whole to each
      drawn = _draw_examples(self._keys, first, **self._static)
      self._first, self._drawn = first, jax.device_put(drawn, self._everywhere)
    return self._drawn, epoch - first


class InitialParams:
  """The initial parameters of many models at once, drawn at the widest shape any of them needs: one compiled,
  vmapped mlp.init per weight scheme for every depth and width, instead of one per group of models.

  A model of depth d is the first d + 1 layers of a net of the deepest depth D and widest width U, sizes
  (2, U, ..., U): its hidden layers are their top-left blocks, and its output layer (V, V0) the first column of
  layer d. This gives exactly the values of mlp.init at the model's own (padded) sizes: mlp.init draws layer l
  from split(key)[2l], [2l + 1] and each weight row with fold_in(key, row), and JAX's partitionable generator
  gives a draw's first n values (keys of a split, numbers of a row) whatever its length; the true sizes set the
  scales and masks as before (layers past d get true sizes 1 and are dropped).
  """

  def __init__(self, models, weight_std, offset_init, offset_std):
    self._row = {m: i for i, m in enumerate(dict.fromkeys(models))}
    distinct = list(self._row)
    depth = max(m.depth for m in distinct)
    width = max([w for m in distinct for w in m.hidden], default=1)
    keys = _seed_keys(distinct, 0)
    true_MxS = np.asarray([(2, *m.hidden, *[1] * (depth + 1 - m.depth)) for m in distinct], np.int32)
    self._drawn = None
    for scheme in sorted({m.init for m in distinct}):
      idx = np.asarray([i for i, m in enumerate(distinct) if m.init == scheme])
      init = functools.partial(mlp.init, sizes=(2, *[width] * (depth + 1)), weight_init=scheme,
                               offset_init=offset_init, weight_std=weight_std, offset_std=offset_std)
      stacked = jax.jit(jax.vmap(lambda k, t, init=init: init(k, true_sizes=tuple(t))),
                        compiler_options=quick_compile.options())(keys[idx], true_MxS[idx])
      layers = [(np.asarray(p['W']), np.asarray(p['W0'])) for p in stacked['layers']]
      layers.append((np.asarray(stacked['V']), np.asarray(stacked['V0'])))
      if self._drawn is None:
        self._drawn = [(np.zeros((len(distinct),) + w.shape[1:], w.dtype),
                        np.zeros((len(distinct),) + b.shape[1:], b.dtype)) for w, b in layers]
      for (w_all, b_all), (w, b) in zip(self._drawn, layers):
        w_all[idx], b_all[idx] = w, b

  def of(self, models, padded):
    """Stacked initial parameters (leading axis M, numpy) of `models` (all of depth len(padded)), padded to
    hidden widths `padded` (units past a model's width are zero, as mlp.init masks them)."""
    rows = np.asarray([self._row[m] for m in models])

    def block(a, *shape):  # a[rows] cut or zero-padded to shape (after the model axis)
      a = a[rows][(slice(None), *[slice(0, n) for n in shape])]
      return np.pad(a, [(0, 0), *[(0, n - s) for n, s in zip(shape, a.shape[1:])]])

    sizes = (2, *padded)
    params = {'layers': [{'W': block(w, sizes[l], sizes[l + 1]), 'W0': block(b, sizes[l + 1])}
                         for l, (w, b) in enumerate(self._drawn[:len(padded)])]}
    w, b = self._drawn[len(padded)]
    params['V'], params['V0'] = block(w, sizes[-1], 1), block(b, 1)
    return params


def train(models, datasets, model_cfg, train_cfg, tx, *, snapshot_epochs=(), on_epoch=None, **options):
  """Trains `models` (all of one depth) on `datasets` {Model.dataset: ((x, y), (x_test, y_test))}: Group(...).train.

  Returns a dict of numpy arrays with leading axis M:
    curves      {train_loss, train_accuracy: [M, epochs + 1]}, entry 0 before training; a stopped model's values
                stay constant
    test        {test_loss, test_accuracy: [M]} after the last epoch
    epochs      [M] the epoch each model stopped at (zero training loss) or `train_cfg.epochs`
    params      final parameters; snapshots {epoch: parameters} for each of `snapshot_epochs` reached
    params0     initial parameters
  `on_epoch(epoch, metrics, active)` is called after every epoch. `options`: Group's.
  """
  return Group(models, datasets, model_cfg, train_cfg, tx, snapshot_epochs=snapshot_epochs, **options).train(on_epoch)


class Group:
  """A group of models (all of one depth) ready to train: its inputs placed on the devices and its programs chosen.
  `compile()` compiles those programs without running them, so that a caller can make the next group ready in
  another thread while this one trains (the same programs: the results do not change); `train(on_epoch)` trains it
  (see train).

  The model axis is sharded over `mesh` (default: all devices); the model list is padded with copies of its
  last model to a multiple of the device count, and the copies are dropped from every output. `initial`: an
  InitialParams holding these models (a sweep draws every group's at once); default: drawn here.
  `learning_rates`: each model's eta_0, with `tx` a function eta_0 -> transformation (make_epoch_fn), so that
  models of several step sizes train in one program; `dataset_keys`: each model's key in `datasets` (default
  Model.dataset), so that models of several data settings (a margin, say) train together. `programs`: the
  Programs of this set-up, to reuse its compilations across groups; default: made here.
  """

  def __init__(self, models, datasets, model_cfg, train_cfg, tx, *, snapshot_epochs=(), mesh=None, initial=None,
               learning_rates=None, dataset_keys=None, programs=None):
    depths = {m.depth for m in models}
    if len(depths) != 1:
      raise ValueError(f'models of one depth per call, got depths {sorted(depths)}')
    mesh = mesh or sharding.model_mesh()
    num_models = len(models)
    extra = sharding.padded_count(num_models, mesh) - num_models
    models = list(models) + [models[-1]] * extra
    if dataset_keys is None:
      dataset_keys = [m.dataset for m in models]
    else:
      dataset_keys = [*dataset_keys, *[dataset_keys[-1]] * extra]
    (depth,) = depths
    padded = tuple(max(m.hidden[l] for m in models) for l in range(depth))
    n_train = len(datasets[dataset_keys[0]][0][1])
    steps = n_train // train_cfg.batch_size
    keys = sorted(set(dataset_keys), key=repr)
    task_of = np.asarray([keys.index(k) for k in dataset_keys])
    splits = {name: np.stack([np.asarray(datasets[k][s][a]) for k in keys])[task_of]
              for name, s, a in (('x_train', 0, 0), ('y_train', 0, 1), ('x_test', 1, 0), ('y_test', 1, 1))}
    self.examples = Examples(models, n_train, steps, train_cfg.batch_size, train_cfg.sampling, train_cfg.epochs,
                             mesh)
    data = {**splits, 'masks': masks_for(models, padded), 'example_row': self.examples.rows}
    if learning_rates is not None:
      data['learning_rate'] = np.asarray([*learning_rates, *[learning_rates[-1]] * extra], np.float32)
    if initial is None:
      initial = InitialParams(models, model_cfg.weight_std, model_cfg.offset_init, model_cfg.offset_std)
    self.params0 = initial.of(models, padded)
    self.params = sharding.shard_models(self.params0, mesh)
    # placed like epoch_fn's outputs: an optimiser state that does not depend on the parameters (a step count) would
    # otherwise come out of init unplaced, and the second epoch would compile epoch_fn again
    self.data = sharding.shard_models(data, mesh)
    programs = programs or Programs(tx, model_cfg, train_cfg)
    self.epoch_fn, self.measure = programs.epoch_for(padded, mesh), programs.measure
    self.opt_state = sharding.shard_models(
        jax.device_get(programs.init_opt(self.params, self.data.get('learning_rate'))), mesh)
    self.active = np.ones(len(models), bool)
    self.active[num_models:] = False  # padding copies: computed alongside, never reported
    self.active_on_devices = sharding.shard_models(self.active, mesh)  # placed again only when a model stops
    self.snapshot_epochs, self.train_cfg, self.mesh = snapshot_epochs, train_cfg, mesh
    self.num_models, self.padded = num_models, padded

  def compile(self):
    """Compiles the group's programs (drawing its first epochs' examples), as its first epoch and evaluations
    would, without training: their later calls find them compiled."""
    self.epoch_fn.lower(self.params, self.opt_state, self.examples(1), self.active_on_devices, self.data).compile()
    self.measure.lower(self.params, self.data).compile()
    return self

  def train(self, on_epoch=None):
    """Trains the group (once): train's results."""
    train_cfg, snapshot_epochs, num_models = self.train_cfg, self.snapshot_epochs, self.num_models
    params, opt_state, data, examples, epoch_fn = self.params, self.opt_state, self.data, self.examples, self.epoch_fn
    active, active_on_devices, mesh = self.active, self.active_on_devices, self.mesh
    self.params = self.opt_state = None  # donated to the first epoch

    def measured(params, split):  # one program measures both splits
      return {k: np.asarray(v) for k, v in self.measure(params, data).items() if k.startswith(split + '_')}

    history = [measured(params, 'train')]
    stopped_at = np.full(len(active), train_cfg.epochs)
    snapshots = {0: self.params0} if 0 in snapshot_epochs else {}
    for epoch in range(1, train_cfg.epochs + 1):
      params, opt_state, metrics = epoch_fn(params, opt_state, examples(epoch), active_on_devices, data)
      metrics = jax.tree.map(np.asarray, metrics)
      history.append(metrics)
      if epoch in snapshot_epochs:
        snapshots[epoch] = jax.tree.map(np.asarray, params)
      if train_cfg.stop_at_zero_loss:
        newly = active & (metrics['train_loss'] == 0)
        stopped_at[newly] = epoch
        active &= ~newly
        if newly.any():
          active_on_devices = sharding.shard_models(active, mesh)
      if on_epoch is not None:
        on_epoch(epoch, jax.tree.map(lambda a: a[:num_models], metrics), active[:num_models])
      if not active.any():  # every model is stopped: the remaining epochs would change nothing
        history += [metrics] * (train_cfg.epochs - epoch)
        break
    final = jax.tree.map(np.asarray, params)
    test = measured(params, 'test')
    for e in snapshot_epochs:  # epochs after an early stop hold the final (frozen) parameters
      snapshots.setdefault(e, final)
    curves = {k: np.stack([h[k] for h in history], axis=1) for k in history[0]}
    out = {'curves': curves, 'test': test, 'epochs': stopped_at, 'params': final, 'params0': self.params0,
           'snapshots': snapshots}
    out = jax.tree.map(lambda a: a[:num_models], out)  # drop the padding copies
    return {**out, 'padded': self.padded}
