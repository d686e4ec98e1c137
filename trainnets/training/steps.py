"""The jitted steps of supervised image classification, with shardings at their edges, the training state they
carry, and the evaluation loop over a test split.

Kept apart from the trainer (trainnets/training/classifier.py) so that benchmarks run the very same step on a machine
that has only JAX, optax and the nets (no TensorFlow, no checkpointing, no plotting).
"""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import losses
from trainnets.data import pipeline
from trainnets.training import distributed
from trainnets.training import sharding


@flax.struct.dataclass
class TrainState:
  """What the step takes and returns, and what a checkpoint holds (a pytree: its fields are its leaves' paths)."""
  params: Any
  opt_state: Any
  step: Any  # int32 scalar: steps taken
  rng: Any  # the base PRNG key; step k's dropout key is fold_in(rng, k)


def initial_state(params, tx, rng):
  """A fresh training state: the parameters, the optimiser's initial state, step 0 and the base key."""
  return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32), rng=rng)


AUGMENT_STREAM = 1  # the step's augmentation key is fold_in(fold_in(rng, step), AUGMENT_STREAM)


def make_train_step(apply_fn, tx, mesh, state_sharding=None, preprocess=None):
  """The jitted update: (state, batch) -> (state, metrics). The batch is split over 'data'; the state is laid
  out as `state_sharding` says (default: replicated), and XLA inserts the collectives that layout needs.
  `preprocess(batch, key)`, if given, turns the host's batch into the model's inputs inside the step (the
  dataset's augmentation on the accelerator); its key depends only on the state's rng and step."""

  def loss_fn(params, batch, key):
    logits = apply_fn(params, batch['image'], train=True, key=key)
    return losses.softmax_cross_entropy(logits, batch['label']).mean(), logits

  def step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    if preprocess is not None:
      batch = preprocess(batch, jax.random.fold_in(key, AUGMENT_STREAM))
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
               'grad_norm': optax.global_norm(grads), 'param_norm': optax.global_norm(params)}
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

  rep, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state_sharding = rep if state_sharding is None else state_sharding
  # Donating the old state lets accelerators update it in place (AlexNet's state is 0.7 GB). XLA's CPU backend
  # gains nothing from it and its in-place schedule made the CPU step slower
  # (docs/fashion_mnist/cnn_cpu_performance.md), so the CPU keeps the old buffers.
  donate = () if mesh.devices.flat[0].platform == 'cpu' else (0,)
  return jax.jit(step, in_shardings=(state_sharding, batch), out_shardings=(state_sharding, rep),
                 donate_argnums=donate)


CONFUSION_MAX_CLASSES = 100  # above this, no confusion matrix (ImageNet's would be 1000 x 1000)


def make_eval_step(apply_fn, mesh, num_classes, params_sharding=None, preprocess=None):
  """The jitted evaluation of one padded batch by one model or an ensemble.

  params: a stack of models' parameters (leading axis: models; one model is a stack of one). batch['image']:
  (B, H, W, C), or (B, V, H, W, C) for V views of each image. The prediction is the mean softmax output over
  models and views (the AlexNet paper's 10-crop and five-model averages). Returns sums over the batch's real
  examples: loss (-log of the predicted probability of the label), top-1 and top-5 correct, count, and the
  confusion matrix for up to CONFUSION_MAX_CLASSES classes. `preprocess(batch)`, if given, makes the views from
  the host's batch inside the step.
  """

  def step(params, batch):
    if preprocess is not None:
      batch = preprocess(batch)
    images = batch['image']
    views = images.shape[1] if images.ndim == 5 else 1
    flat = images.reshape(-1, *images.shape[-3:])
    probs = jax.vmap(lambda p: jax.nn.softmax(apply_fn(p, flat, train=False)))(params)  # (models, B*V, classes)
    probs = probs.mean(0).reshape(-1, views, num_classes).mean(1)
    mask, label = batch['mask'], batch['label']
    p_label = jnp.take_along_axis(probs, label[:, None], axis=-1)[:, 0]
    top5 = jax.lax.top_k(probs, min(5, num_classes))[1]
    out = {'loss_sum': jnp.sum(-jnp.log(jnp.maximum(p_label, 1e-30)) * mask),
           'correct': jnp.sum((jnp.argmax(probs, -1) == label) * mask),
           'correct_top5': jnp.sum(jnp.any(top5 == label[:, None], axis=-1) * mask), 'count': jnp.sum(mask)}
    if num_classes <= CONFUSION_MAX_CLASSES:
      out['confusion'] = jnp.einsum('bi,bj->ij', jax.nn.one_hot(label, num_classes) * mask[:, None],
                                    jax.nn.one_hot(jnp.argmax(probs, -1), num_classes))
    return out

  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(params_sharding or rep, sharding.batch_sharding(mesh)), out_shardings=rep)


def stack_models(*params):
  """The parameters of several models of one architecture, stacked along a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)


def evaluate_dataset(eval_step, params, dataset, batch_size, mesh, crops=1, split='test'):
  """Loss and accuracy ({split}_loss, {split}_accuracy), top-1/top-5 error and (for few classes) the confusion
  matrix over the whole `split` ('test', or 'validation': the training examples held out).

  params: one model's parameters or a stack of several (see make_eval_step)."""
  totals = None
  params = jax.device_put(params, sharding.replicated(mesh))  # gathers any split dense layers
  n = dataset.num_validation if split == 'validation' else dataset.num_test
  batch_size = min(batch_size, -(-n // mesh.size) * mesh.size)  # no batch beyond the split (the same numbers)
  kw = {'crops': crops} if crops != 1 else {}
  batches = dataset.eval_batches(split, batch_size=batch_size, process=distributed.process(), **kw)
  for batch in pipeline.prefetch_to_device(batches, sharding.batch_sharding(mesh)):
    out = eval_step(params, batch)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.tree.map(np.asarray, totals)
  accuracy = float(totals['correct'] / totals['count'])
  return {f'{split}_loss': float(totals['loss_sum'] / totals['count']), f'{split}_accuracy': accuracy,
          'top1_error': 1.0 - accuracy, 'top5_error': float(1.0 - totals['correct_top5'] / totals['count']),
          'confusion': totals['confusion'].astype(np.int64) if 'confusion' in totals else None}
