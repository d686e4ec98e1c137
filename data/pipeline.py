"""Host input pipelines in tf.data, feeding sharded device arrays.

TensorFlow only reads and preprocesses on the host: it is imported lazily, and hidden from GPUs and TPUs so it
never takes accelerator memory from JAX. Training batches come from a per-epoch shuffle seeded by (seed, epoch),
so a run resumed at step s of epoch e sees exactly the batches an uninterrupted run would: the epoch's order is
rebuilt and its first s batches skipped. The last partial training batch of an epoch is dropped (every epoch
reshuffles, so no example is left out for long); evaluation pads its last batch and marks the padding with
mask = 0, so every test example counts exactly once.
"""
import collections
import functools

import jax
import numpy as np


@functools.cache
def tf():
  """TensorFlow, imported once, with every accelerator hidden from it."""
  import tensorflow as tf_module  # noqa: PLC0415 (heavy: only pipelines need it)

  for kind in ('GPU', 'TPU'):
    try:
      tf_module.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device kind
      pass
  return tf_module


def epoch_seed(seed, epoch):
  """The shuffle seed of one epoch: distinct per (seed, epoch), the same in every process and run."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train_batches(ds, *, shuffle_buffer, batch_size, seed, epoch, skip_batches=0, preprocess=None, augment=None):
  """numpy batches of one training epoch, in the order fixed by (seed, epoch).

  `shuffle_buffer` as large as the split gives a uniform shuffle (in-memory datasets); streamed datasets also
  shuffle their files with the epoch's seed. `augment(example, seed)` transforms one example with TF's stateless
  random ops; its seed is (epoch seed, position in the epoch), so a resumed epoch, which skips its first
  `skip_batches` batches before any decoding, augments every later example exactly as the uninterrupted one did.
  `preprocess` maps whole batches.
  """
  t, es = tf(), epoch_seed(seed, epoch)
  ds = ds.shuffle(shuffle_buffer, seed=es, reshuffle_each_iteration=False)
  skip = skip_batches * batch_size
  ds = ds.skip(skip)
  if augment is not None:
    ds = ds.enumerate(start=skip).map(lambda i, x: augment(x, t.stack([t.constant(es, t.int64), i])),
                                      num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  if preprocess is not None:
    ds = ds.map(preprocess, num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(t.data.AUTOTUNE).as_numpy_iterator()


def eval_batches(ds, *, batch_size, preprocess=None):
  """numpy batches {'image', 'label', 'mask'}; the last one is padded to batch_size with mask 0."""
  t = tf()
  ds = ds.map(lambda x: {**x, 'mask': t.constant(1.0)})
  if preprocess is not None:
    ds = ds.map(lambda x: {**preprocess(x), 'mask': x['mask']}, num_parallel_calls=t.data.AUTOTUNE)
  for batch in ds.batch(batch_size).prefetch(t.data.AUTOTUNE).as_numpy_iterator():
    n = len(batch['mask'])
    if n < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    yield batch


def prefetch_to_device(batches, sharding, size=2):
  """Puts the next `size` batches on the devices (split by `sharding`) while the current step runs."""
  queue = collections.deque()
  for batch in batches:
    queue.append(jax.device_put(batch, sharding))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
