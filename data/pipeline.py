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
import contextlib
import os
import sys
import tempfile

import jax
import numpy as np

import errors
from errors import DataError
import tf_host

tf = tf_host.tf  # the pipelines' TensorFlow, hidden from accelerators


def tfds_builder(name, data_dir):
  """(TFDS's builder of `name` in data_dir, whether it is prepared), without TFDS's warning that an unprepared
  directory has no dataset_info.json: the caller says what to do in one line instead. A data_dir that is not a
  directory, or unprepared and not writable, or whose prepared files cannot be read, is a DataError."""
  from absl import logging  # noqa: PLC0415
  import tensorflow_datasets as tfds  # noqa: PLC0415

  elsewhere = 'pass --config.data.tfds_dir=DIR (or set $TFDS_DATA_DIR) naming a directory you can write'
  how = f'{elsewhere}, or remove {os.path.join(data_dir, name)} to prepare it again'
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f'the TFDS data directory {data_dir} is a file, not a directory; {elsewhere}')
  tf()  # TF hidden from accelerators before TFDS starts it
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    b = tfds.builder(name, data_dir=data_dir)
    prepared = b.is_prepared()
  except Exception as e:  # noqa: BLE001 (TFDS raises many types for a damaged dataset_info.json)
    raise DataError(f'the prepared {name} in {data_dir} cannot be read ({errors.one_line(e)}); {how}') from None
  finally:
    logging.set_verbosity(verbosity)
  if not prepared:
    try:
      os.makedirs(data_dir, exist_ok=True)
      tempfile.NamedTemporaryFile(dir=data_dir, prefix='.write-test-').close()
    except OSError as e:
      raise DataError(f'{name} is not prepared in {data_dir} and that directory cannot be written '
                      f'({e.strerror}); {elsewhere}') from None
  return b, prepared


@contextlib.contextmanager
def native_stderr_held():
  """Holds what native code (TensorFlow's C++ logging) writes to stderr during the block: replayed after a
  success, dropped when the block raises, whose error then says in one line what TensorFlow's warnings about
  the same failure would have said in several."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with tempfile.TemporaryFile() as held:
      os.dup2(held.fileno(), 2)
      try:
        yield
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
      held.seek(0)
      text = held.read()
      if text:
        os.write(2, text)
  finally:
    os.close(saved)


def checked(batches, what):
  """`batches` (an iterator from tf.data), with a read or decode failure of the data on disk (a truncated
  TFRecord, say) turned into a DataError naming `what` instead of a TensorFlow traceback mid-run."""
  tf_errors = tf().errors
  try:
    yield from batches
  except (tf_errors.DataLossError, tf_errors.InvalidArgumentError, tf_errors.NotFoundError) as e:
    raise DataError(f'reading {what} failed ({errors.one_line(e)}); the prepared data is damaged: remove it to '
                    'prepare it again') from None


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
  return checked(finish(ds, autotune).as_numpy_iterator(), 'the training data')


def finish(ds, autotune):
  """`ds`, prefetching; with autotune=False, without tf.data's autotuning. An autotuned iterator runs a tuning
  thread that deleting the iterator waits for, which costs seconds per epoch on a small in-memory dataset and
  nothing that matters on ImageNet's long epochs (docs/fashion_mnist/cnn_cpu_performance.md has the measurement).
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
  return checked(finish(ds.batch(batch_size // process[1]), autotune).as_numpy_iterator(), 'the evaluation data')


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
