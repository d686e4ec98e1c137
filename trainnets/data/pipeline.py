"""Host input pipelines in tf.data, feeding sharded device arrays.

TensorFlow only reads and preprocesses on the host: it is imported lazily, and hidden from GPUs and TPUs so it
never takes accelerator memory from JAX. Which examples each batch holds, in every epoch and process, is
trainnets/data/sampler.py's (one order for every dataset); here in-memory arrays are gathered by those indices,
augmented and preprocessed, and batches put on the devices.
"""
import collections
import contextlib
import os
import sys
import tempfile

import jax

from trainnets import errors
from trainnets import tf_host
from trainnets.data import sampler
from trainnets.errors import DataError

tf = tf_host.tf  # the pipelines' TensorFlow, hidden from accelerators


def as_written(fn):
  """`fn` for tf.data's map, traced as written, without AutoGraph's conversion: the pipelines' functions have no
  Python control flow on tensors to convert, and AutoGraph writes each function it converts to a file in the
  temporary directory that only a normal interpreter exit removes (a run ended by an error, a signal or a dead peer
  leaves with os._exit, and would leave them behind)."""
  return tf().autograph.experimental.do_not_convert(fn)


@contextlib.contextmanager
def temporary_files_removed():
  """Points Python's temporary directory at a fresh one for the block and removes it after. Construct TFDS's
  builders of unprepared datasets in it: each makes a directory there to copy its metadata from GCS into, and
  leaves it behind, empty, when there is none to copy (each preparation, and each test that prepares, added one to
  /tmp). The builder reads what it copied before it returns."""
  with tempfile.TemporaryDirectory(prefix='trainnets-tfds-') as private:
    saved, tempfile.tempdir = tempfile.tempdir, private
    try:
      yield
    finally:
      tempfile.tempdir = saved


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
    with temporary_files_removed():
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


def _examples(arrays, rows, process, **extra):
  """A tf.data source of this process's columns of each global batch in `rows` (trainnets/data/sampler.py), gathered
  from the in-memory `arrays` ({name: array over the examples}), with `extra` arrays shaped like rows."""
  cols = sampler.local(rows.shape[1], process)
  picked = rows[:, cols].ravel()
  return tf().data.Dataset.from_tensor_slices({**{k: v[picked] for k, v in arrays.items()},
                                               **{k: v[:, cols].ravel() for k, v in extra.items()}})


def train_batches(arrays, rows, positions, *, epoch_seed, preprocess=None, augment=None, process=(0, 1),
                  autotune=True):
  """numpy batches of this process's part of the global training batches `rows` of the in-memory `arrays`
  (trainnets/data/sampler.py's train_rows: the epoch's order from its first batch not yet trained on). `augment(example,
  seed)` transforms one example with TF's stateless random ops; its seed is (epoch_seed, the example's
  position in the epoch), so a resumed epoch augments every later example exactly as the uninterrupted one did,
  in whichever process. `preprocess` maps whole batches. process: (index, count) of this process in the job.
  autotune: see `finish`."""
  t = tf()
  ds = _examples(arrays, rows, process, position=positions)
  if augment is not None:
    ds = ds.map(as_written(lambda x: augment({k: x[k] for k in arrays},
                                             t.stack([t.constant(epoch_seed, t.int64), x['position']]))),
                num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  else:
    ds = ds.map(as_written(lambda x: {k: x[k] for k in arrays}))
  ds = ds.batch(rows.shape[1] // process[1], drop_remainder=True)
  if preprocess is not None:
    ds = ds.map(as_written(preprocess), num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
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


def eval_batches(arrays, rows, mask, *, preprocess=None, process=(0, 1), autotune=True):
  """numpy batches {'image', 'label', 'mask'} of this process's part of the padded evaluation rows
  (trainnets/data/sampler.py's eval_rows) of the in-memory `arrays`."""
  t = tf()
  ds = _examples(arrays, rows, process, mask=mask).batch(rows.shape[1] // process[1])
  if preprocess is not None:
    ds = ds.map(as_written(lambda x: {**preprocess(x), 'mask': x['mask']}), num_parallel_calls=t.data.AUTOTUNE,
                deterministic=True)
  return checked(finish(ds, autotune).as_numpy_iterator(), 'the evaluation data')


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
