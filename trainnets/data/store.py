"""A prepared image store: images encoded once, in shards that any process reads by index, 1/P of them each.

Layout of a store directory (one per dataset and preprocessing):
    manifest.json          written last: the store is complete. Preprocessing, class names, per split the
                           number of examples, images per shard, and every shard's count, size and sha256;
                           the sizes and sha256s of the other files it lists (a dataset's statistics); the
                           sha256 of its own content (manifest_sha256)
    <split>-00000.jpegs    the shard's encoded images, concatenated
    <split>-00000.npz      offsets (count + 1, int64) of each image in the .jpegs file, labels (int32)
    <split>-00000.json     the shard's record (count, sizes, sha256s), written after both files: the shard is done
Each file is written atomically, so an interrupted preparation leaves whole shards, and resumes after the last.
Plain files and numpy: readable with no library of this project, on any platform.

Checks. Every open hashes the small files (the manifest, each shard's record and .npz of offsets and labels, the
statistics) against the manifest; each process hashes a shard's images (.jpegs) before it first reads from it,
in parallel threads (hashlib releases the GIL), so no changed byte reaches a step. The cost is one read of the
store per process and run: docs/imagenet_input.md gives the measured rate.

Order: trainnets/data/sampler.py's, as for every dataset (each process reads and decodes only its part of every global
batch; a resumed epoch reads nothing it skips).
"""
import concurrent.futures
import hashlib
import json
import mmap
import os

import numpy as np

from trainnets import files
from trainnets.data import pipeline
from trainnets.data import sampler
from trainnets.errors import DataError

MANIFEST = 'manifest.json'


def shard_name(split, k):
  return f'{split}-{k:05d}'


def _sha256(path):
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def write_shard(directory, split, k, encoded, labels, **extra):
  """Writes shard k of `split`: the encoded images (a list of bytes), their labels and `extra` arrays (saved in
  the shard's .npz, e.g. the sums a statistic needs). The shard's .json, written last, makes it done; the sha256s
  it records are of the bytes written (verify_shards reads them back from disk)."""
  name = shard_name(split, k)
  offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
  record = {'name': name, 'count': len(encoded)}
  for ext, data in (('jpegs', b''.join(encoded)),
                    ('npz', files.npz_bytes(offsets=offsets, labels=np.asarray(labels, np.int32), **extra))):
    files.write_bytes(os.path.join(directory, f'{name}.{ext}'), data)
    record[ext] = {'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest()}
  files.write_json(os.path.join(directory, name + '.json'), record)
  return record


def split_entry(records, shard_images):
  """A split of the manifest: its shards' records, the images per shard and their total."""
  return {'num_examples': sum(r['count'] for r in records), 'shard_images': shard_images, 'shards': records}


def done_shard(directory, split, k, count):
  """Shard k's record if it is done, holds `count` images and its files have the recorded sizes, else None."""
  path = os.path.join(directory, shard_name(split, k) + '.json')
  try:
    with open(path) as f:
      record = json.load(f)
    if record['count'] != count:
      return None
    for ext in ('jpegs', 'npz'):
      if os.path.getsize(os.path.join(directory, f'{record["name"]}.{ext}')) != record[ext]['bytes']:
        return None
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return record


def verify_shards(directory, records):
  """Recomputes every shard file's sha256; a DataError naming the shards that differ from their records."""
  bad = [r['name'] for r in records for ext in ('jpegs', 'npz')
         if _sha256(os.path.join(directory, f'{r["name"]}.{ext}')) != r[ext]['sha256']]
  if bad:
    raise DataError(f'{len(bad)} shard file(s) of the store in {directory} differ from their checksums '
                    f'({", ".join(sorted(set(bad))[:3])}); remove them and prepare again to rewrite them')


def file_record(data):
  """What the manifest records of a file besides the shards (`files`): its size and sha256."""
  return {'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest()}


def _content_sha256(manifest):
  """sha256 of a manifest's content less its own hash: key order and white space do not count."""
  rest = {k: v for k, v in manifest.items() if k != 'manifest_sha256'}
  return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def finish(directory, preprocessing, splits, **fields):
  """Writes the manifest (the preprocessing, {split: split_entry}, `fields` and its own sha256), which makes the
  store complete, and returns the Store."""
  manifest = {'preprocessing': preprocessing, **fields, 'splits': splits}
  manifest['manifest_sha256'] = _content_sha256(manifest)
  files.write_json(os.path.join(directory, MANIFEST), manifest)
  return Store(directory, manifest)


class Missing(DataError):
  """No store (not even part of one) in the directory."""


class Partial(DataError):
  """Shards but no manifest: a preparation that was interrupted (or is still running)."""


def open_store(directory, preprocessing, how):
  """The complete store in `directory` built with `preprocessing` (a dict). Missing if there is none; a
  DataError in one line, ending with `how` (the command that prepares or finishes it), if it is partial, was
  built with other preprocessing, or its files changed since it was written."""
  manifest_path = os.path.join(directory, MANIFEST)
  if not os.path.exists(manifest_path):
    done = [f for f in (os.listdir(directory) if os.path.isdir(directory) else []) if f.endswith('.json')]
    if not done:
      raise Missing(f'no prepared store in {directory}; {how}')
    raise Partial(f'the store in {directory} is partial ({len(done)} shard(s) written, no {MANIFEST}): its '
                  f'preparation was interrupted; finish it with {how}')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f'{manifest_path} cannot be read ({e}); remove {directory} and {how}') from None
  if not isinstance(manifest, dict) or manifest.get('manifest_sha256') != _content_sha256(manifest):
    raise DataError(f'{manifest_path} does not match its sha256 (changed since it was written, or written by an '
                    f'older version); remove {directory} and {how}')
  if manifest.get('preprocessing') != preprocessing:
    raise DataError(f'the store in {directory} was built with other preprocessing ({manifest.get("preprocessing")}'
                    f', this code uses {preprocessing}); remove it or pass another directory, and {how}')
  changed = [r['name'] for split, s in manifest['splits'].items() for k, r in enumerate(s['shards'])
             if done_shard(directory, split, k, r['count']) != r
             or _sha256(os.path.join(directory, r['name'] + '.npz')) != r['npz']['sha256']]  # offsets, labels
  changed += [f for f, record in manifest.get('files', {}).items()  # other files the manifest lists
              if not os.path.isfile(os.path.join(directory, f))
              or _sha256(os.path.join(directory, f)) != record['sha256']]
  if changed:
    raise DataError(f'the store in {directory} changed since it was written ({", ".join(changed[:3])}'
                    f'{" ..." if len(changed) > 3 else ""}); remove {directory} and {how}')
  return Store(directory, manifest)


class Store:
  """Random access to a complete store's images: read(split, indices) -> (encoded images, labels)."""

  def __init__(self, directory, manifest):
    self.directory, self.manifest = directory, manifest
    self._shards = {}  # (split, k) -> (mmap of the .jpegs, offsets, labels)
    self._verified = set()  # (split, k) of the shards whose images this process has hashed

  def verify(self, split, indices):
    """Hashes, once per process, the image files of the shards that hold `indices` (in parallel threads); a
    DataError naming the shards whose bytes differ from the manifest's sha256, before any image is read."""
    per = self.manifest['splits'][split]['shard_images']
    todo = sorted(set(np.unique(np.asarray(indices, np.int64) // per).tolist())
                  - {k for s, k in self._verified if s == split})
    records = self.manifest['splits'][split]['shards']
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
      digests = list(pool.map(lambda k: _sha256(os.path.join(self.directory, records[k]['name'] + '.jpegs')), todo))
    bad = [records[k]['name'] for k, d in zip(todo, digests) if d != records[k]['jpegs']['sha256']]
    if bad:
      raise DataError(f'{len(bad)} image shard(s) of the store in {self.directory} differ from their sha256 '
                      f'({", ".join(bad[:3])}): the store was changed or damaged since it was written; remove '
                      'them and prepare the store again to rewrite them')
    self._verified |= {(split, k) for k in todo}

  def num_examples(self, split):
    return self.manifest['splits'][split]['num_examples']

  def labels(self, split):
    """int32 labels of every example of the split, in order (from the shards' small .npz files)."""
    per, n = self.manifest['splits'][split]['shard_images'], self.num_examples(split)
    return np.concatenate([self._shard(split, k)[2] for k in range(-(-n // per))]).astype(np.int32)[:n]

  def _shard(self, split, k):
    if (split, k) not in self._shards:
      name = os.path.join(self.directory, shard_name(split, k))
      with np.load(name + '.npz') as z:
        offsets, labels = z['offsets'], z['labels']
      with open(name + '.jpegs', 'rb') as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if offsets[-1] else b''
      self._shards[split, k] = (data, offsets, labels)
    return self._shards[split, k]

  def read(self, split, indices):
    """([bytes, ...], int32 labels) of the split's examples at `indices`, in that order."""
    per = self.manifest['splits'][split]['shard_images']
    encoded, labels = [], np.empty(len(indices), np.int32)
    for j, i in enumerate(indices):
      data, offsets, shard_labels = self._shard(split, int(i) // per)
      r = int(i) % per
      encoded.append(data[offsets[r]:offsets[r + 1]])
      labels[j] = shard_labels[r]
    return encoded, labels


def held_out(labels, count):
  """Indices of `count` examples held out of a training split for validation, stratified by class: each class
  gives its last examples (in the split's order), in proportion to its size (largest remainders round, ties to
  the lower class). Returns (kept indices, held-out indices), each in order."""
  labels = np.asarray(labels)
  if count == 0:
    return np.arange(len(labels)), np.zeros(0, np.int64)
  classes, sizes = np.unique(labels, return_counts=True)
  quota = sizes * count / len(labels)
  take = np.floor(quota).astype(np.int64)
  extra = np.lexsort((classes, -(quota - take)))[:count - take.sum()]  # largest remainders, then lower class
  take[extra] += 1
  held = np.concatenate([np.flatnonzero(labels == c)[len(np.flatnonzero(labels == c)) - k:] if k else
                         np.zeros(0, np.int64) for c, k in zip(classes, take)])
  mask = np.zeros(len(labels), bool)
  mask[held] = True
  return np.flatnonzero(~mask), np.flatnonzero(mask)


def batches(store, split, rows, decode, *, process=(0, 1), positions=None, mask=None, autotune=True):
  """numpy batches of this process's part of each global batch in `rows` ((batches, B) indices into the split,
  from trainnets/data/sampler.py): each example is read, then `decode(encoded, label, position)` in tf.data, in parallel
  and in order, with position from `positions` (like rows; default 0). mask (like rows): added as 'mask'."""
  t = pipeline.tf()
  cols = sampler.local(rows.shape[1], process)
  local = cols.stop - cols.start
  positions = np.zeros(rows.shape, np.int64) if positions is None else positions
  store.verify(split, rows[:, cols])  # before any of them is read

  def generate():  # the batch's images as one bytes object and their lengths: a numpy array of bytes objects
    for b in range(rows.shape[0]):  # would cost more to hand to TensorFlow than decoding them does
      encoded, labels = store.read(split, rows[b, cols])
      extra = (mask[b, cols],) if mask is not None else ()
      yield (positions[b, cols], labels, b''.join(encoded), np.array([len(e) for e in encoded], np.int64)) + extra

  signature = (t.TensorSpec([None], t.int64), t.TensorSpec([None], t.int32), t.TensorSpec([], t.string),
               t.TensorSpec([None], t.int64))
  if mask is not None:
    signature += (t.TensorSpec([None], t.float32),)

  def split_images(positions, labels, blob, lengths, *extra):
    return (positions, labels, t.strings.substr(blob, t.cumsum(lengths, exclusive=True), lengths)) + extra

  # prefetch: the generator's reads in Python overlap the decoding instead of waiting for it
  ds = t.data.Dataset.from_generator(generate, output_signature=signature)
  ds = ds.map(pipeline.as_written(split_images)).prefetch(2).unbatch()
  if mask is None:
    ds = ds.map(pipeline.as_written(lambda i, y, x: decode(x, y, i)), num_parallel_calls=t.data.AUTOTUNE,
                deterministic=True)
  else:
    ds = ds.map(pipeline.as_written(lambda i, y, x, m: {**decode(x, y, i), 'mask': m}),
                num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  ds = pipeline.finish(ds.batch(local, drop_remainder=True), autotune)
  return pipeline.checked(ds.as_numpy_iterator(), f'the prepared {split} images in {store.directory}')


def train_batches(store, split, examples, decode, *, batch_size, seed, epoch, skip_batches=0, process=(0, 1),
                  autotune=True):
  """This process's part of each global training batch of the epoch from batch skip_batches on, over `examples`
  (a count: the split's first examples; or an array of indices into the split); decode(encoded, label, position)
  with position the example's place in the epoch (a seed for its augmentation)."""
  rows, positions = sampler.train_rows(examples, batch_size, seed, epoch, skip_batches)
  return batches(store, split, rows, decode, process=process, positions=positions, autotune=autotune)


def eval_batches(store, split, examples, decode, *, batch_size, process=(0, 1), autotune=True):
  """`examples` of the split in order (a count: the first ones; or an array of indices), padded to whole global
  batches with copies of the first marked mask = 0, so every example counts once and every process runs the same
  number of steps."""
  rows, mask = sampler.eval_rows(examples, batch_size)
  return batches(store, split, rows, decode, process=process, mask=mask, autotune=autotune)
