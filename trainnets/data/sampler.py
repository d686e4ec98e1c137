"""The one input order of every dataset: which examples each process reads, in which order, in every epoch.

A dataset is examples addressed by index: an in-memory array (Fashion-MNIST) is the trivial case of a prepared
store (ImageNet, trainnets/data/store.py). Everything about order is here, once, as numpy index arrays:
  - training: epoch e's order is a permutation of the examples fixed by (seed, e), cut into whole global batches
    of B (the partial last batch is dropped; every epoch reshuffles, so no example is left out for long). A run
    resumed at batch s of epoch e starts at row s: nothing skipped is read. Each example's position in the epoch
    seeds its augmentation, so a resumed epoch augments every later example as the uninterrupted one did.
  - evaluation: the examples in order, padded to whole global batches with copies of the first, marked mask = 0,
    so every example counts exactly once and every process runs the same number of steps.
  - processes: process p of P reads columns p*B/P .. (p+1)*B/P - 1 of every global batch, where
    jax.make_array_from_process_local_data puts them, so the global batch does not depend on P.
The permutation comes from numpy's generator for every dataset but Fashion-MNIST, whose published runs were made
with tf.data's shuffle of the whole split: ORDERS names both, and a dataset says which it uses.

Why not grain's IndexSampler with ShardByJaxProcess: its order is grain's own permutation, so Fashion-MNIST's
published runs (tf.data's order) could not be kept; its iterator state is what it checkpoints, where here the step
alone fixes the position (nothing to save, nothing to restore out of step with the parameters); and grain would be
one more dependency for these few lines of numpy.
"""
import numpy as np

from trainnets import tf_host

ORDERS = ('numpy', 'tf.data')


def epoch_seed(seed, epoch):
  """The shuffle seed of one epoch: distinct per (seed, epoch), the same in every process and run."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def permutation(n, seed, epoch, order='numpy'):
  """Epoch `epoch`'s permutation of range(n), fixed by (seed, epoch). order 'tf.data': the order tf.data's
  shuffle of n elements with a buffer of n gives (it depends only on the seed and the count, not on the
  elements), drawn as indices."""
  es = epoch_seed(seed, epoch)
  if order == 'numpy':
    return np.random.default_rng(es).permutation(n)
  if order != 'tf.data':
    raise ValueError(f'order {order!r} is not one of {ORDERS}')
  if n == 0:
    return np.zeros(0, np.int64)
  t = tf_host.tf()
  ds = t.data.Dataset.range(n).shuffle(n, seed=es, reshuffle_each_iteration=False).batch(n)
  return next(iter(ds.as_numpy_iterator()))


def indices(examples):
  """The example indices: range(examples) for a count, or the given array of indices."""
  return np.arange(examples) if np.ndim(examples) == 0 else np.asarray(examples, np.int64)


def train_rows(examples, batch_size, seed, epoch, skip_batches=0, order='numpy'):
  """(rows, positions) of epoch `epoch` from global batch skip_batches on: rows (batches, B) of example indices
  (`examples`: a count, or an array of indices into the dataset), positions (batches, B) each example's place in
  the epoch (the seed of its augmentation)."""
  idx = indices(examples)
  steps = len(idx) // batch_size
  order_ = permutation(len(idx), seed, epoch, order)[:steps * batch_size].reshape(steps, batch_size)
  positions = np.arange(steps * batch_size, dtype=np.int64).reshape(steps, batch_size)
  return idx[order_[skip_batches:]], positions[skip_batches:]


def eval_rows(examples, batch_size):
  """(rows, mask): `examples` in order as rows (batches, B), padded with copies of the first, mask 0 there."""
  idx = indices(examples)
  pad = -len(idx) % batch_size
  rows = np.concatenate([idx, np.full(pad, idx[0] if len(idx) else 0)]).reshape(-1, batch_size)
  mask = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32).reshape(-1, batch_size)
  return rows, mask


def local(batch_size, process):
  """This process's columns of every global batch: a slice, for process = (index, count)."""
  index, count = process
  per = batch_size // count
  return slice(index * per, (index + 1) * per)
