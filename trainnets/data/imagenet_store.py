"""ImageNet's prepared store: the paper down-sampled every image once, and so does this code.

From TFDS's imagenet2012 records, one pass decodes each image, resizes its shorter side to 256 (bilinear,
antialiased), takes the central 256x256 crop, rounds it to uint8 and stores it as a JPEG of quality 95 (~6x fewer
bytes than raw pixels; reading it is ~8x faster than decoding and resizing the original: docs/imagenet_input.md),
in shards (trainnets/data/store.py) beside the TFDS data (data.store_dir), and sums the training images' pixels for the
mean image and the RGB covariance's eigen-decomposition that trainnets/data/imagenet.py's augmentation uses. It resumes
after an interruption and checks every shard's sha256 at the end; training reads only the store, so TFDS's
records may then be deleted.

Command line (once, e.g. on a cluster's shared storage before a multi-process job):
  python -m trainnets.data.imagenet_store --tfds_dir=DIR [--manual_dir=DIR] [--store_dir=DIR] [--shard_images=5000]
"""
import os
import sys
import time
import types

from absl import app
from absl import flags
import numpy as np

from trainnets import files
from trainnets import tf_host
from trainnets.data import imagenet_tfds
from trainnets.data import pipeline
from trainnets.data import store as store_lib
from trainnets.data.augment import RESIZE
from trainnets.errors import DataError

NAME = 'imagenet2012'
# What the store holds; a store built with other values is refused (trainnets/data/store.py). Quality 95: see
# docs/imagenet_input.md for the measured speed and size of each quality.
PREPROCESSING = {'version': 1, 'image': 'shorter side to 256 (bilinear, antialiased), central 256x256 crop, uint8',
                 'jpeg_quality': 95}
STORE = 'imagenet2012_256'  # the store's directory in data.tfds_dir, beside TFDS's imagenet2012
STATISTICS = 'statistics.npz'
SHARD_IMAGES = 5000  # ~100-150 MB per shard


def decode_resize_crop(jpeg):
  """JPEG bytes -> float32 (256, 256, 3) in 0..255: shorter side to 256 (bilinear, antialiased), central crop."""
  t = pipeline.tf()
  image = t.io.decode_jpeg(jpeg, channels=3)
  shape = t.cast(t.shape(image)[:2], t.float32)
  size = t.cast(t.round(shape * RESIZE / t.reduce_min(shape)), t.int32)
  image = t.image.resize(image, t.maximum(size, RESIZE), antialias=True)
  top, left = (t.shape(image)[0] - RESIZE) // 2, (t.shape(image)[1] - RESIZE) // 2
  return image[top:top + RESIZE, left:left + RESIZE, :]


def decode_uint8(jpeg):
  """What the host sends when the accelerator augments (data.augment_on='device'): decode_resize_crop's 256x256
  image rounded to uint8, a quarter of the bytes of float32."""
  t = pipeline.tf()
  return t.saturate_cast(t.round(decode_resize_crop(jpeg)), t.uint8)


def encode_256(jpeg, quality=PREPROCESSING['jpeg_quality']):
  """An original JPEG -> the stored one: decode_uint8's 256x256 image, encoded at PREPROCESSING's quality."""
  return pipeline.tf().io.encode_jpeg(decode_uint8(jpeg), quality=quality)


def decode_256(encoded):
  """A stored JPEG -> uint8 (256, 256, 3)."""
  image = pipeline.tf().io.decode_jpeg(encoded, channels=3)
  image.set_shape((RESIZE, RESIZE, 3))
  return image


def store_dir(data_cfg, tfds_dir):
  return os.path.expanduser(data_cfg.store_dir) if data_cfg.store_dir else os.path.join(tfds_dir, STORE)


def prepare_store(b, directory, shard_images=SHARD_IMAGES, log=lambda line: print(line, file=sys.stderr)):
  """Writes the store of TFDS's prepared imagenet2012 `b` into `directory`, resuming after the shards already
  done, then checks every shard's sha256, computes the statistics and writes the manifest. Returns the Store.
  log: what takes each progress line (a line per shard; default: stderr)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  t = pipeline.tf()
  splits, sums, moments = {}, np.zeros((RESIZE, RESIZE, 3)), np.zeros((3, 3))
  for split in ('train', 'validation'):
    n = b.info.splits[split].num_examples
    shards, records = -(-n // shard_images), []
    start, written = time.monotonic(), 0
    for k in range(shards):
      lo, hi = k * shard_images, min((k + 1) * shard_images, n)
      record = store_lib.done_shard(directory, split, k, hi - lo)
      if record is None:
        ds = b.as_dataset(split=f'{split}[{lo}:{hi}]', decoders={'image': tfds.decode.SkipDecoding()},
                          shuffle_files=False)
        ds = ds.map(pipeline.as_written(lambda x: (encode_256(x['image']), x['label'])),
                    num_parallel_calls=t.data.AUTOTUNE)
        ds = ds.map(pipeline.as_written(lambda e, y: (e, y, decode_256(e))), num_parallel_calls=t.data.AUTOTUNE)
        ds = ds.batch(256)
        encoded, labels = [], []
        shard_sums, shard_moments = np.zeros((RESIZE, RESIZE, 3)), np.zeros((3, 3))
        for e, y, images in pipeline.checked(ds.as_numpy_iterator(), f'{NAME} {split} in {b.data_dir}'):
          encoded += list(e)
          labels += list(y)
          if split == 'train':  # what training reads: the stored images, decoded
            shard_sums += images.sum(0, dtype=np.float64)
            rgb = images.reshape(-1, 3).astype(np.float64) / 255.0
            shard_moments += rgb.T @ rgb
        record = store_lib.write_shard(directory, split, k, encoded, labels, sums=shard_sums, moments=shard_moments)
        written += hi - lo
        rate = written / (time.monotonic() - start)
        log(f'[{NAME} store] {split} shard {k + 1}/{shards}: {hi:,} of {n:,} images ({rate:,.0f} images/s, '
            f'{split} done in {(n - hi) / rate / 60:,.0f} min)')
      records.append(record)
      if split == 'train':
        with np.load(os.path.join(directory, record['name'] + '.npz')) as z:
          sums, moments = sums + z['sums'], moments + z['moments']
    splits[split] = store_lib.split_entry(records, shard_images)
  log(f'[{NAME} store] checking every shard\'s sha256')
  store_lib.verify_shards(directory, [r for s in splits.values() for r in s['shards']])
  n = splits['train']['num_examples']
  mean = sums / n
  pixel_mean = mean.reshape(-1, 3).mean(0) / 255.0
  eigval, eigvec = np.linalg.eigh(moments / (n * RESIZE * RESIZE) - np.outer(pixel_mean, pixel_mean))
  eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
  eigvec = eigvec * np.sign(eigvec[np.abs(eigvec).argmax(0), range(3)])
  statistics = files.npz_bytes(mean=mean.astype(np.float32), eigval=eigval.astype(np.float32),
                               eigvec=eigvec.astype(np.float32))
  files.write_bytes(os.path.join(directory, STATISTICS), statistics)
  return store_lib.finish(directory, PREPROCESSING, splits, source=f'{NAME} {b.version}',
                          class_names=list(b.info.features['label'].names),
                          files={STATISTICS: store_lib.file_record(statistics)})


def open_or_prepare(data_cfg, finish_partial=False, shard_images=SHARD_IMAGES):
  """The complete store data_cfg names, prepared first (and TFDS's imagenet2012 before it) if there is none. A
  partial store is finished only with finish_partial (python -m trainnets.data.imagenet_store): training refuses it, as
  another job may be writing it."""
  tfds_dir = os.path.expanduser(data_cfg.tfds_dir)
  if data_cfg.fake_images:  # in a directory of its own: never mixed with a real prepared imagenet2012
    tfds_dir = os.path.join(tfds_dir, f'fake_imagenet2012_{data_cfg.fake_images}')
  directory = store_dir(data_cfg, tfds_dir)
  how = (f'python -m trainnets.data.imagenet_store --tfds_dir={tfds_dir}'
         + (f' --store_dir={directory}' if data_cfg.store_dir else ''))
  try:
    return store_lib.open_store(directory, PREPROCESSING, how)
  except store_lib.Missing:
    pass
  except store_lib.Partial:
    if not finish_partial:
      raise
  if data_cfg.fake_images:
    manual = imagenet_tfds.write_fake_manual_dir(os.path.join(tfds_dir, 'manual'), images=data_cfg.fake_images)
  else:
    manual = imagenet_tfds.manual_dir(data_cfg)
  return prepare_store(imagenet_tfds.builder(tfds_dir, manual), directory, shard_images)


FLAGS = flags.FLAGS


def main(argv):
  """python -m trainnets.data.imagenet_store --tfds_dir=DIR [--manual_dir=DIR] [--store_dir=DIR]: prepare TFDS's
  imagenet2012 and the store training reads, or finish an interrupted preparation; once, e.g. on the shared
  storage of a cluster before a multi-process job (it takes hours; processes waiting for it would time out)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected argument {argv[1]!r}; every argument is a flag such as --tfds_dir=DIR')
  if FLAGS.shard_images < 1:
    raise app.UsageError(f'--shard_images={FLAGS.shard_images}: pass a positive number of images per shard')
  cfg = types.SimpleNamespace(manual_dir=FLAGS.manual_dir, tfds_dir=FLAGS.tfds_dir, store_dir=FLAGS.store_dir,
                              fake_images=0)
  try:
    store = open_or_prepare(cfg, finish_partial=True, shard_images=FLAGS.shard_images)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'the {NAME} store in {store.directory} is complete: {store.num_examples("train")} training and '
        f'{store.num_examples("validation")} validation images, with the mean image and PCA statistics')


if __name__ == '__main__':
  tf_host.quiet()
  flags.DEFINE_string('tfds_dir', os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'), 'TFDS data directory.')
  flags.DEFINE_string('manual_dir', '', 'Where ImageNet\'s two archives are (default: TFDS_DIR/downloads/manual).')
  flags.DEFINE_string('store_dir', '', f'Where the store goes (default: TFDS_DIR/{STORE}).')
  flags.DEFINE_integer('shard_images', SHARD_IMAGES, 'Images per shard of the store.')
  app.run(main)
