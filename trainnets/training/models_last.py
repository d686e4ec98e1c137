"""The per-example SGD step with the model axis last: vmap_sweep's arithmetic, bit for bit, laid out for XLA:CPU.

vmap_sweep's epoch program holds the models' parameters model-major ([M, units, ...]): XLA:CPU runs each model's
small matrix-vector products as a loop of its own and vectorises over a net's few units. Here every array holds the
model axis last ([units, ..., M]) and a step is elementwise work vectorised over the models. For nets whose
hidden-to-hidden products are narrow this trains faster (docs/performance.md); `layout_for` picks the layout, and
the epoch program (vmap_sweep.make_epoch_fn) runs this step in place of its vmapped one, then evaluates the
training set as before.

The same bits need the same arithmetic: each sum added up in the order XLA:CPU's vmapped program adds it, and each
product fused into the sum (one rounding, a fused multiply-add) where that program fuses it:
  - forward, z_j = sum_k a_k W_kj (XLA:CPU's column-major gemv): in k order, each product added to the sum so far;
  - backward, da_k = sum_j W_kj dz_j (its row-major gemv): the products of the first 8 * (J // 8) columns summed in
    8 lanes (column j into lane j mod 8, in order), the lanes added as a tree, then the remaining columns' sum, in
    order, added to it; the rows in whole tiles of 8 and the rows after them use two different trees.
Each sum is written out as elementwise work, so no library kernel reorders it; a sum many later operations read is
then made a reduction with zeros (exact in any order), so that XLA computes it once instead of inside every
operation that reads it, and each step reads its example from the loop's carry (an example sliced out of an array
inside an elementwise fusion keeps XLA:CPU from vectorising it). `tests/test_models_last.py` compares both
layouts, every parameter and metric, over whole epochs for the depths, widths, activations, losses and optimisers
this layout trains, and the sums alone against XLA:CPU's own products; `unsupported` names what it does not train.
"""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import optax

from nets import activations
from nets import losses
from trainnets.errors import ConfigError

LAYOUTS = ('auto', 'models_first', 'models_last')
WIDEST_FAST = 16  # `auto` trains nets models-last when no hidden layer is wider (padded)


def layout_for(train_cfg, padded):
  """'models_first' or 'models_last': the layout train.layout gives a group of nets padded to hidden widths
  `padded`. 'auto' takes models_last where it gives the same bits and was measured faster (docs/performance.md): on
  the CPU, for the settings `unsupported` passes, for nets with hidden layers none wider than WIDEST_FAST. Raises
  ConfigError where train.layout=models_last cannot give the same bits."""
  layout = train_cfg.get('layout', 'models_first')
  if layout == 'models_first':
    return layout
  why = unsupported(train_cfg, padded)
  if layout == 'models_last':
    if why:
      raise ConfigError(f'train.layout=models_last {why}; pass --config.train.layout=auto')
    return layout
  fast = not why and len(padded) >= 1 and all(w <= WIDEST_FAST for w in padded)
  return 'models_last' if fast else 'models_first'


def unsupported(train_cfg, padded):
  """Why this layout would not give vmap's bits for `train_cfg` and hidden widths `padded`, or None. Each setting
  it accepts is tested bit for bit (tests/test_models_last.py); the others sum or fuse in other orders."""
  if jax.default_backend() != 'cpu':
    return f"repeats XLA:CPU's order of summation, and this runs on {jax.default_backend()}"
  if train_cfg.batch_size != 1:
    return f'trains per-example SGD (train.batch_size=1), not batches of {train_cfg.batch_size}'
  if train_cfg.optimizer != 'sgd':
    return f"trains SGD (train.optimizer=sgd), not {train_cfg.optimizer!r}"
  if train_cfg.weight_decay:
    return 'trains without weight decay (train.weight_decay=0)'
  if train_cfg.momentum and train_cfg.momentum_form != 'velocity':
    return "trains momentum in the form 'velocity' only"
  odd = [w for w in padded if w % 8 == 1 or w == 2]  # XLA:CPU sums products of these widths in other orders
  if odd:
    return f'does not repeat the order of a layer {odd[0]} units wide (2, or one past a multiple of 8)'
  return None


def _gemv_rows(W, v):
  """[R, M]: sum_j W[r, j, m] v[j, m], summed in the order of XLA:CPU's row-major gemv (see the module doc)."""
  R, J = W.shape[:2]
  if J == 1:
    return W[:, 0] * v[0][None]
  whole = J // 8 * 8
  parts = []
  zero = jax.lax.optimization_barrier(jnp.zeros((), W.dtype))  # a sum starts as product + 0, not fused on
  if whole:
    lane = [W[:, l] * v[l][None] + zero for l in range(8)]
    for t in range(8, whole, 8):
      lane = [W[:, t + l] * v[t + l][None] + lane[l] for l in range(8)]
    tiled = R // 8 * 8
    pairs = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
    halves = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]))
    parts.append(jnp.concatenate([pairs[:tiled], halves[tiled:]]) if tiled < R else pairs)
  if whole < J:
    rest = W[:, whole] * v[whole][None] + zero
    for j in range(whole + 1, J):
      rest = W[:, j] * v[j][None] + rest
    parts.append(rest)
  return _once(parts[0] if len(parts) == 1 else parts[0] + parts[1])


@jax.custom_vjp
def dense(a_KxM, W_KxJxM):
  """z [J, M] = sum_k a[k] W[k]: in k order, each product fused into the sum so far."""
  z = a_KxM[0][None] * W_KxJxM[0]
  for k in range(1, W_KxJxM.shape[0]):
    z = a_KxM[k][None] * W_KxJxM[k] + z
  return _once(z) if W_KxJxM.shape[1] == 1 else z  # the output score is read by every parameter's update


def _once(x):
  """x, computed once: the sum of x and zeros (exact in any order) is a reduction, which XLA does not copy into each
  operation that reads it, as it copies elementwise work."""
  return jnp.sum(jnp.stack([x, jnp.zeros_like(x)]), axis=0)


def _dense_fwd(a, W):
  return dense(a, W), (a, W)


def _dense_bwd(saved, dz):
  a, W = saved
  return _gemv_rows(W, dz), a[:, None] * dz[None]


dense.defvjp(_dense_fwd, _dense_bwd)


def make_train_step(tx_for, mesh, *, activation, loss):
  """train(params_M, opt_M, (examples, k), data) -> (params_M, opt_M): one epoch of per-example SGD, for
  vmap_sweep.make_epoch_fn's epoch program in place of its vmapped epoch (which keeps the stopped models' state as
  before; the model axis first and split over `mesh`'s 'models' axis at the edge). Each device trains its own models
  (shard_map). `tx_for(eta_0)`: the optax transformation of step size eta_0 (each model's data['learning_rate'],
  or None). train.unroll, a speed setting of the vmapped step's loop, does not apply here."""
  f = activations.get(activation)
  loss_fn = losses.get_binary(loss)
  last = lambda a: jnp.moveaxis(a, 0, -1)
  first = lambda a: jnp.moveaxis(a, -1, 0)

  def objective(params, x_DxM, y_M, masks):
    a = x_DxM
    for l, layer in enumerate(params['layers']):
      a = f(dense(a, layer['W']) + layer['W0'])
      if masks is not None:
        a = a * masks[l]
    return jnp.sum(loss_fn(dense(a, params['V'])[0] + params['V0'][0], y_M))

  def local(params_M, opt_M, drawn, k, data):  # one device's models
    idx_MxS = drawn[data['example_row'], k][:, :, 0]
    x_SxDxM = jnp.moveaxis(jnp.take_along_axis(data['x_train'], idx_MxS[:, :, None], axis=1), 0, -1)
    y_SxM = jnp.take_along_axis(data['y_train'], idx_MxS, axis=1).T
    masks = None if data['masks'] is None else [last(m) for m in data['masks']]
    tx = tx_for(data.get('learning_rate'))
    final = idx_MxS.shape[1] - 1

    def step(carry, s):
      params, opt_state, x_DxM, y_M = carry
      grads = jax.grad(objective)(params, x_DxM, y_M, masks)
      updates, opt_state = tx.update(grads, opt_state, params)
      following = jnp.minimum(s + 1, final)  # the next example, carried: read where the step begins
      return (optax.apply_updates(params, updates), opt_state, x_SxDxM[following], y_SxM[following]), None

    init = (jax.tree.map(last, params_M), jax.tree.map(last, opt_M), x_SxDxM[0], y_SxM[0])
    (params, opt_state, _, _), _ = jax.lax.scan(step, init, jnp.arange(final + 1))
    return jax.tree.map(first, params), jax.tree.map(first, opt_state)

  models, whole = P('models'), P()

  def train(params_M, opt_M, examples, data):
    drawn, k = examples
    data = {key: data[key] for key in ('example_row', 'x_train', 'y_train', 'masks', 'learning_rate') if key in data}
    with jax.numpy_rank_promotion('allow'):  # optax's per-model scalars ([M]) meet parameters [..., M]
      return jax.shard_map(local, mesh=mesh, in_specs=(models, models, whole, whole, models),
                           out_specs=(models, models))(params_M, opt_M, drawn, k, data)

  return train
