"""ImageNet (ILSVRC 2012) through TFDS's `imagenet2012` builder, with the AlexNet paper's preprocessing.

The data: TFDS's imagenet2012 builder prepares ImageNet's two archives (data/imagenet_tfds.py says where they
go); one pass over its records then writes the prepared store that training reads.

The prepared store (data/store.py): the paper down-sampled every image once, and so does this code. From TFDS's
records, one pass decodes each image, resizes its shorter side to 256 (bilinear, antialiased), takes the central
256x256 crop, rounds it to uint8 and stores it as a JPEG of quality 95 (~6x fewer bytes than raw pixels; reading
it is ~8x faster than decoding and resizing the original: docs/imagenet_input.md), in shards beside the TFDS
data (data.store_dir), and sums
the training images' pixels for the statistics below. It resumes after an interruption and checks every shard's
sha256 at the end; training reads only the store, so TFDS's records may then be deleted.

Preprocessing (Krizhevsky et al. 2012, sections 2 and 4.1):
  - every image: the stored 256x256 image minus the per-pixel mean image of the training set (pixels stay in
    0..255);
  - training: a random 224x224 crop, a horizontal flip with probability 1/2, and PCA colour augmentation: to
    every pixel add 255 * sum_i alpha_i * lambda_i * p_i, with p_i, lambda_i the eigenvectors and eigenvalues of
    the RGB covariance of the training pixels scaled to [0, 1], and alpha_i ~ N(0, 0.1^2) drawn once per image.
    The scale is the convention every reproduction uses (a shift of ~5.5 grey levels on average along the first
    component); the paper's formula read with the covariance of 0..255 pixels would shift colours by ~1,400.
    The mean image and the eigen-decomposition are those of all stored training images, computed while
    preparing the store; data.pca='published' uses the set published with fb.resnet.torch instead;
  - evaluation: the central 224x224 crop, or 10 crops (four corners and centre, and their mirror images) whose
    softmax outputs the evaluation averages.
With data.augment_on='device' (the default) the host only reads and decodes the stored images and the training
step does the rest on the accelerator (data/augment.py). With 'host', tf.data does it with TF's stateless random
ops seeded by (epoch seed, position in the epoch). Either way a resumed run augments every image exactly as the
uninterrupted one did, and each process of a job reads and decodes only its share (data/store.py).
"""
import os
import sys
import time
import types

import jax.numpy as jnp
import numpy as np

from data import augment as augment_lib
from data import imagenet_tfds
from data import pipeline
from data import store as store_lib
import errors
from errors import DataError
import files
import tf_host

NAME = 'imagenet2012'
RESIZE, CROP = 256, 224
# Eigen-decomposition of the RGB covariance of ImageNet's training pixels (scaled to [0, 1]), as published with
# fb.resnet.torch and used by most reproductions (data.pca='published'); columns of EIGVEC are the eigenvectors.
EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]], np.float32)
PCA_STD = 0.1
PCA = ('computed', 'published')
AUGMENT_ON = ('device', 'host')
# What the store holds; a store built with other values is refused (data/store.py). Quality 95: see
# docs/imagenet_input.md for the measured speed and size of each quality.
PREPROCESSING = {'version': 1, 'image': 'shorter side to 256 (bilinear, antialiased), central 256x256 crop, uint8',
                 'jpeg_quality': 95}
STORE = 'imagenet2012_256'  # the store's directory in data.tfds_dir, beside TFDS's imagenet2012
STATISTICS = 'statistics.npz'
SHARD_IMAGES = 5000  # ~100-150 MB per shard


# ----------------------------------------------------------------------------------------- per-image transforms


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


def augment(image_256, seed, eigval=EIGVAL, eigvec=EIGVEC, positions=RESIZE - CROP):
  """The training crop, flip and PCA colour shift of one mean-subtracted 256x256 image; seed: int64 (2,);
  eigval (3,), eigvec (3, 3) (columns): the RGB covariance's eigen-decomposition, pixels scaled to [0, 1];
  positions: the crop's offsets each way (0..positions-1)."""
  t = pipeline.tf()
  seeds = t.random.experimental.stateless_split(seed, 3)
  reach = CROP + positions - 1  # a crop of the top-left reach x reach pixels has exactly `positions` offsets
  image = t.image.stateless_random_crop(image_256[:reach, :reach], (CROP, CROP, 3), seeds[0])
  image = t.image.stateless_random_flip_left_right(image, seeds[1])
  alpha = t.random.stateless_normal((3,), seeds[2], stddev=PCA_STD)
  shift = 255.0 * t.linalg.matvec(t.constant(eigvec), alpha * t.constant(eigval))  # pixels are in 0..255
  return image + shift


def eval_crops(image_256, crops):
  """The central 224x224 crop (crops=1: (224, 224, 3)) or the ten crops ((10, 224, 224, 3))."""
  t = pipeline.tf()
  o, c = RESIZE - CROP, (RESIZE - CROP) // 2
  if crops == 1:
    return image_256[c:c + CROP, c:c + CROP, :]
  five = t.stack([image_256[y:y + CROP, x:x + CROP, :] for y, x in ((0, 0), (0, o), (o, 0), (o, o), (c, c))])
  return t.concat([five, t.reverse(five, axis=[2])], axis=0)


# ------------------------------------------------------------------------------------------ the prepared store


def encode_256(jpeg, quality=PREPROCESSING['jpeg_quality']):
  """An original JPEG -> the stored one: decode_uint8's 256x256 image, encoded at PREPROCESSING's quality."""
  return pipeline.tf().io.encode_jpeg(decode_uint8(jpeg), quality=quality)


def decode_256(encoded):
  """A stored JPEG -> uint8 (256, 256, 3)."""
  image = pipeline.tf().io.decode_jpeg(encoded, channels=3)
  image.set_shape((RESIZE, RESIZE, 3))
  return image


def _stored(encoded, label, position):
  """A store example as the host sends it when the accelerator augments: the decoded uint8 image and its label."""
  del position
  return {'image': decode_256(encoded), 'label': label}


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
        ds = ds.map(lambda x: (encode_256(x['image']), x['label']), num_parallel_calls=t.data.AUTOTUNE)
        ds = ds.map(lambda e, y: (e, y, decode_256(e)), num_parallel_calls=t.data.AUTOTUNE).batch(256)
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
  partial store is finished only with finish_partial (python -m data.imagenet): training refuses it, as another
  job may be writing it."""
  tfds_dir = os.path.expanduser(data_cfg.tfds_dir)
  if data_cfg.fake_images:  # in a directory of its own: never mixed with a real prepared imagenet2012
    tfds_dir = os.path.join(tfds_dir, f'fake_imagenet2012_{data_cfg.fake_images}')
  directory = store_dir(data_cfg, tfds_dir)
  how = f'python -m data.imagenet --tfds_dir={tfds_dir}' + (f' --store_dir={directory}' if data_cfg.store_dir else '')
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


# ----------------------------------------------------------------------------------------------- the dataset


class Dataset:
  """ImageNet for the classifier trainer: train and validation splits read from the prepared store.

  The validation split is the "test" split of the trainer (ILSVRC 2012's test labels were never released).
  """

  image_shape = (CROP, CROP, 3)
  test_views = (1, 10)  # views per test image it offers: the centre crop, or the paper's ten

  def __init__(self, data_cfg):
    errors.require(data_cfg.augment_on in AUGMENT_ON, f'data.augment_on {data_cfg.augment_on!r} is unknown; choose '
                   f'one of {", ".join(AUGMENT_ON)}')
    errors.require(data_cfg.pca in PCA, f'data.pca {data_cfg.pca!r} is unknown; choose one of {", ".join(PCA)}')
    errors.require(1 <= data_cfg.crop_positions <= RESIZE - CROP + 1, f'data.crop_positions must be in 1..'
                   f'{RESIZE - CROP + 1} (offsets of a {CROP} crop in {RESIZE}), got {data_cfg.crop_positions}')
    self.augment_on = data_cfg.augment_on
    self._positions = data_cfg.crop_positions
    self.store = open_or_prepare(data_cfg)
    total = self.store.num_examples('train')
    errors.require(0 <= data_cfg.num_validation < total, f'data.num_validation must be in 0..{total - 1} (training '
                   f'images held out for validation), got {data_cfg.num_validation}')
    kept, self._validation = store_lib.held_out(self.store.labels('train'), data_cfg.num_validation)
    self.num_validation = len(self._validation)
    self.num_train = min(data_cfg.num_train or len(kept), len(kept))
    self._train = kept[:self.num_train]
    self.num_test = min(data_cfg.num_test or self.store.num_examples('validation'),
                        self.store.num_examples('validation'))
    self.class_names = tuple(self.store.manifest['class_names'])
    self.num_classes = len(self.class_names)
    with np.load(os.path.join(self.store.directory, STATISTICS)) as z:
      self._mean, eigval, eigvec = z['mean'], z['eigval'], z['eigvec']
    self._eig = (eigval, eigvec) if data_cfg.pca == 'computed' else (EIGVAL, EIGVEC)

  def _centred(self, encoded):
    """A stored image as float32, minus the mean image (the host path's input to its crops)."""
    t = pipeline.tf()
    return t.cast(decode_256(encoded), t.float32) - self._mean

  @property
  def device_train(self):
    """With augment_on='device': (batch, key) -> the step's inputs (data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean, (eigval, eigvec) = jnp.asarray(self._mean), (jnp.asarray(e) for e in self._eig)
    return lambda batch, key: {**batch, 'image': augment_lib.train_views(batch['image'], key, mean, eigval, eigvec,
                                                                        PCA_STD, self._positions)}

  def device_test(self, crops):
    """With augment_on='device': batch -> its `crops` views (data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean = jnp.asarray(self._mean)
    return lambda batch: {**batch, 'image': augment_lib.test_views(batch['image'], mean, crops)}

  def train_batches(self, *, batch_size, seed, epoch, skip_batches=0, process=(0, 1)):
    t, es = pipeline.tf(), pipeline.epoch_seed(seed, epoch)
    if self.augment_on == 'device':
      decode = _stored
    else:
      decode = lambda x, y, i: {'image': augment(self._centred(x), t.stack([t.constant(es, t.int64), i]),
                                                 *self._eig, self._positions), 'label': y}
    return store_lib.train_batches(self.store, 'train', self._train, decode, batch_size=batch_size, seed=seed,
                                   epoch=epoch, skip_batches=skip_batches, process=process)

  def verify(self, splits):
    """Hashes the stored images of `splits` ('train', 'validation', 'test') against the manifest, once per process:
    a DataError in one line for any changed byte, before the caller writes anything."""
    for split in splits:
      self.store.verify(*self._source(split))

  def _source(self, split):
    """(the store's split, the indices into it) that `split` reads."""
    return {'train': ('train', self._train), 'validation': ('train', self._validation),
            'test': ('validation', np.arange(self.num_test))}[split]

  def eval_batches(self, split, *, batch_size, crops=1, process=(0, 1)):
    """split 'validation': the training images held out (data.num_validation, stratified by class); 'test':
    ILSVRC 2012's validation set, whose labels are public (its test labels never were)."""
    if self.augment_on == 'device':
      decode = _stored
    else:
      decode = lambda x, y, i: {'image': eval_crops(self._centred(x), crops), 'label': y}
    return store_lib.eval_batches(self.store, *self._source(split), decode, batch_size=batch_size,
                                  process=process)


def main(argv=None):
  """python -m data.imagenet --tfds_dir=DIR [--manual_dir=DIR] [--store_dir=DIR]: prepare TFDS's imagenet2012 and
  the store training reads, or finish an interrupted preparation; once, e.g. on the shared storage of a cluster
  before a multi-process job (it takes hours; processes waiting for it would time out)."""
  import argparse  # noqa: PLC0415

  tf_host.quiet()
  p = argparse.ArgumentParser(description=main.__doc__.split(':')[0])
  p.add_argument('--tfds_dir', default=os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))
  p.add_argument('--manual_dir', default='')
  p.add_argument('--store_dir', default='', help=f'where the store goes (default: TFDS_DIR/{STORE})')
  p.add_argument('--shard_images', type=int, default=SHARD_IMAGES, help='images per shard of the store')
  args = p.parse_args(argv)
  if args.shard_images < 1:
    p.error(f'--shard_images={args.shard_images}: pass a positive number of images per shard')
  cfg = types.SimpleNamespace(manual_dir=args.manual_dir, tfds_dir=args.tfds_dir, store_dir=args.store_dir,
                              fake_images=0)
  try:
    store = open_or_prepare(cfg, finish_partial=True, shard_images=args.shard_images)
  except DataError as e:
    p.exit(2, f'error: {e}\n')
  print(f'the {NAME} store in {store.directory} is complete: {store.num_examples("train")} training and '
        f'{store.num_examples("validation")} validation images, with the mean image and PCA statistics')


if __name__ == '__main__':
  main()
