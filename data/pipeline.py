"""Host input pipelines in tf.data, feeding sharded device arrays.

TensorFlow only reads and preprocesses on the host: it is imported lazily, and hidden from GPUs and TPUs so it
never takes accelerator memory from JAX. Training batches come from a per-epoch shuffle seeded by (seed, epoch),
so a run resumed at step s of epoch e sees exactly the batches an uninterrupted run would: the epoch's order is
rebuilt and its first s batches skipped. The last partial training batch of an epoch is dropped (every epoch
reshuffles, so no example is left out for long); evaluation pads its last batch and marks the padding with
mask = 0, so every test example counts exactly once. In a multi-process job every process builds the same
order and keeps only its own block of each global batch, before any decoding or augmentation.
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


def tfds_builder(name, data_dir):
  """(TFDS's builder of `name` in data_dir, whether it is prepared), without TFDS's warning that an unprepared
  directory has no dataset_info.json: the caller says what to do in one line instead."""
  from absl import logging  # noqa: PLC0415
  import tensorflow_datasets as tfds  # noqa: PLC0415

  tf()  # TF hidden from accelerators before TFDS starts it
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    b = tfds.builder(name, data_dir=data_dir)
    return b, b.is_prepared()
  finally:
    logging.set_verbosity(verbosity)


def epoch_seed(seed, epoch):
  """The shuffle seed of one epoch: distinct per (seed, epoch), the same in every process and run."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _local_part(ds, batch_size, process):
  """The examples of this process: (position, example) pairs whose position falls in this process's contiguous
  block of every global batch. Process p of P holds rows p*B/P .. (p+1)*B/P - 1 of each global batch of B, which
  is where jax.make_array_from_process_local_data puts them: the global batch equals the single-process one."""
  index, count = process
  if count == 1:
    return ds
  local = batch_size // count
  return ds.filter(lambda i, x: (i % batch_size) // local == index)


def train_batches(ds, *, num_examples, batch_size, seed, epoch, skip_batches=0, shuffle_buffer=None,
                  preprocess=None, augment=None, process=(0, 1), autotune=True):
  """numpy batches of this process's part of one training epoch, in the order fixed by (seed, epoch).

  Only whole global batches are used (every process then sees the same number of steps). `shuffle_buffer`
  (default: the whole split, a uniform shuffle for in-memory datasets); streamed datasets also shuffle their
  files with the epoch's seed. `augment(example, seed)` transforms one example with TF's stateless random ops;
  its seed is (epoch seed, position in the epoch), so a resumed epoch, which skips its first `skip_batches`
  global batches before any decoding, augments every later example exactly as the uninterrupted one did, in
  whichever process. `preprocess` maps whole batches. process: (index, count) of this process in the job.
  autotune: see `finish`.
  """
  t, es = tf(), epoch_seed(seed, epoch)
  ds = ds.shuffle(shuffle_buffer or num_examples, seed=es, reshuffle_each_iteration=False)
  ds = ds.take(num_examples // batch_size * batch_size)
  skip = skip_batches * batch_size
  ds = _local_part(ds.skip(skip).enumerate(start=skip), batch_size, process)
  if augment is not None:
    ds = ds.map(lambda i, x: augment(x, t.stack([t.constant(es, t.int64), i])), num_parallel_calls=t.data.AUTOTUNE,
                deterministic=True)
  else:
    ds = ds.map(lambda i, x: x)
  ds = ds.batch(batch_size // process[1], drop_remainder=True)
  if preprocess is not None:
    ds = ds.map(preprocess, num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  return finish(ds, autotune).as_numpy_iterator()


def finish(ds, autotune):
  """`ds`, prefetching; with autotune=False, without tf.data's autotuning (no tuning thread). An autotuned
  iterator runs a tuning thread, and deleting the iterator waits for it: on 2 cores with TF 2.21 that wait took
  6-11 s, after about half of the epochs, when the next epoch replaced the finished iterator (with the CPU idle;
  seen in a native stack dump). Negligible for ImageNet's hour-long epochs; a third of each 30-second
  Fashion-MNIST epoch, whose in-memory pipeline needs no tuning.
  """
  t = tf()
  ds = ds.prefetch(t.data.AUTOTUNE)
  if not autotune:
    options = t.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
  return ds


def eval_batches(ds, *, num_examples, batch_size, preprocess=None, process=(0, 1), autotune=True):
  """numpy batches {'image', 'label', 'mask'} of this process's part of the split. The split is padded to whole
  global batches with copies of its first example marked mask = 0, so every example counts exactly once and
  every process runs the same number of steps."""
  t = tf()
  ds = ds.map(lambda x: {**x, 'mask': t.constant(1.0)})
  pad = -num_examples % batch_size
  if pad:
    ds = ds.concatenate(ds.take(1).map(lambda x: {**x, 'mask': t.constant(0.0)}).repeat(pad))
  ds = _local_part(ds.enumerate(), batch_size, process).map(lambda i, x: x)
  if preprocess is not None:
    ds = ds.map(lambda x: {**preprocess(x), 'mask': x['mask']}, num_parallel_calls=t.data.AUTOTUNE,
                deterministic=True)
  return finish(ds.batch(batch_size // process[1]), autotune).as_numpy_iterator()


def prefetch_to_device(batches, sharding, size=2):
  """Puts the next `size` batches on the devices while the current step runs. Each batch is this process's part
  of the global batch, which `sharding` splits over every device of the job (all of them, in one process)."""
  queue = collections.deque()
  put = lambda batch: jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
  for batch in batches:
    queue.append(put(batch))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
