"""ImageNet (ILSVRC 2012) through TFDS's `imagenet2012` builder, with the AlexNet paper's preprocessing.

The data: TFDS prepares `imagenet2012` from the two archives ImageNet distributes after registration
(https://image-net.org/download-images), which must be in the manual directory:
    ILSVRC2012_img_train.tar (138 GB)  and  ILSVRC2012_img_val.tar (6.3 GB)
The manual directory is the config's `data.manual_dir`, else $IMAGENET_MANUAL_DIR, else TFDS's default
<data.tfds_dir>/downloads/manual. Preparing writes ~150 GB of TFRecords into data.tfds_dir, once.

Preprocessing (Krizhevsky et al. 2012, sections 2 and 4.1), all on the host in tf.data, never in JAX:
  - every image: JPEG decode, shorter side resized to 256, central 256x256 crop, minus the per-pixel mean image
    of the training set (256x256x3; pixels stay in 0..255);
  - training: a random 224x224 crop, a horizontal flip with probability 1/2, and PCA colour augmentation: to
    every pixel add 255 * sum_i alpha_i * lambda_i * p_i, with p_i, lambda_i the eigenvectors and eigenvalues of
    the RGB covariance of the training pixels scaled to [0, 1], and alpha_i ~ N(0, 0.1^2) drawn once per image.
    The scale is the convention every reproduction uses (a shift of ~5.5 grey levels on average along the first
    component); the paper's formula read with the covariance of 0..255 pixels would shift colours by ~1,400.
    The mean image and the eigen-decomposition come from one pass over the training images, cached beside the
    prepared data (`image_statistics`); data.pca='published' uses the set published with fb.resnet.torch instead;
  - evaluation: the central 224x224 crop, or 10 crops (four corners and centre, and their mirror images) whose
    softmax outputs the evaluation averages.
Random draws are TF stateless ops seeded by (epoch seed, position in the epoch), so a resumed run augments every
image exactly as the uninterrupted one did. With data.augment_on='device' (the default) the host sends only the
decoded 256x256 images, rounded to uint8, and the training step does the rest on the accelerator
(data/augment.py: the same operations, JAX's keys instead of TF's seeds).

`write_fake_manual_dir` writes archives in the real format (per-class tars of JPEGs inside the train tar, JPEGs
named ILSVRC2012_val_*.JPEG in the val tar), tiny, so tests and the `quick` config run the real builder offline.
"""
import hashlib
import io
import json
import os
import tarfile
import types

import jax.numpy as jnp
import numpy as np

from data import augment as augment_lib
from data import pipeline
import errors
from errors import ConfigError
from errors import DataError
import files
import tf_host

NAME = 'imagenet2012'
TRAIN_TAR, VAL_TAR = 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'
ENV_VAR = 'IMAGENET_MANUAL_DIR'
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


def manual_dir(data_cfg):
  return os.path.expanduser(data_cfg.manual_dir or os.environ.get(ENV_VAR, '') or
                            os.path.join(data_cfg.tfds_dir, 'downloads', 'manual'))


def builder(data_dir, manual):
  """The TFDS builder of imagenet2012 in data_dir, prepared from the archives in `manual` if it is not yet."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  b, prepared = pipeline.tfds_builder(NAME, data_dir)
  if prepared:
    verify(b)
    return b
  missing = [f for f in (TRAIN_TAR, VAL_TAR) if not os.path.isfile(os.path.join(manual, f))]
  if missing:
    raise DataError(f'ImageNet is not prepared in {data_dir} and {" and ".join(missing)} not in {manual}: download '
                    f'them from https://image-net.org/download-images (after registering) into that directory, or '
                    f'name another one with --config.data.manual_dir=DIR (train.py), --manual_dir=DIR '
                    f'(python -m data.imagenet) or ${ENV_VAR}')
  try:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  except Exception as e:  # noqa: BLE001 (TFDS and tarfile raise many types for a damaged archive)
    raise DataError(f'preparing {NAME} from the archives in {manual} failed ({errors.one_line(e)}); check that '
                    f'{TRAIN_TAR} and {VAL_TAR} are complete (their sizes are listed at '
                    'https://image-net.org/download-images) and run again') from None
  b = tfds.builder(NAME, data_dir=data_dir)
  verify(b)
  return b


VERIFIED = 'verified.json'


def verify(b):
  """Checks once that every record of the prepared splits reads and every image decodes as the pipeline decodes
  it (TFDS stores the archives' bytes unchecked: a damaged JPEG would otherwise stop training after hours), and
  records each file's size in VERIFIED beside TFDS's files; later calls only compare the sizes. A DataError
  names the bad images or files."""
  marker = os.path.join(b.data_dir, VERIFIED)
  sizes = {f: os.path.getsize(os.path.join(b.data_dir, f)) for f in sorted(os.listdir(b.data_dir))
           if '.tfrecord' in f}
  redo = f'remove {b.data_dir} and prepare it again (python -m data.imagenet)'
  if os.path.exists(marker):
    try:
      with open(marker) as f:
        recorded = json.load(f)['files']
    except (OSError, ValueError, KeyError, TypeError):
      recorded = None
    if recorded != sizes:
      changed = sorted(f for f in recorded.keys() | sizes.keys() if recorded.get(f) != sizes.get(f)) if isinstance(
          recorded, dict) else [VERIFIED]
      raise DataError(f'the prepared {NAME} in {b.data_dir} changed since it was verified ({", ".join(changed[:3])}'
                      f'{" ..." if len(changed) > 3 else ""}); {redo}')
    return
  with pipeline.native_stderr_held():  # TF's own lines about each bad image give way to the one line below
    counts = _decode_every_image(b, redo)
  files.write_json(marker, {'files': sizes, 'images': counts})


def _decode_every_image(b, redo):
  """{split: images} after reading every record and decoding every image; a DataError names the bad ones."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  t = pipeline.tf()
  counts, bad = {}, []
  for split in b.info.splits:
    ds = b.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False)
    try:
      names = [n.decode() for n in ds.map(lambda x: x['file_name']).as_numpy_iterator()]
    except t.errors.OpError as e:
      raise DataError(f'the prepared {NAME} split {split} in {b.data_dir} cannot be read ({errors.one_line(e)}); '
                      f'{redo}') from None
    decoded = ds.map(lambda x: (x['file_name'], t.shape(t.io.decode_jpeg(x['image'], channels=3))),
                     num_parallel_calls=t.data.AUTOTUNE).ignore_errors()
    good = {n.decode() for n, _ in decoded.as_numpy_iterator()}
    bad += [f'{split}/{n}' for n in names if n not in good]
    counts[split] = len(names)
  if bad:
    raise DataError(f'{len(bad)} image(s) of the prepared {NAME} do not decode as JPEG ({", ".join(bad[:3])}'
                    f'{" ..." if len(bad) > 3 else ""}); replace them in the archives, then {redo}')
  return counts


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


def augment(image_256, seed, eigval=EIGVAL, eigvec=EIGVEC):
  """The training crop, flip and PCA colour shift of one mean-subtracted 256x256 image; seed: int64 (2,);
  eigval (3,), eigvec (3, 3) (columns): the RGB covariance's eigen-decomposition, pixels scaled to [0, 1]."""
  t = pipeline.tf()
  seeds = t.random.experimental.stateless_split(seed, 3)
  image = t.image.stateless_random_crop(image_256, (CROP, CROP, 3), seeds[0])
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


# ----------------------------------------------------------------------------------------------- the dataset


class Dataset:
  """ImageNet for the classifier trainer: train and validation splits as tf.data pipelines.

  The validation split is the "test" split of the trainer (ILSVRC 2012's test labels were never released).
  """

  image_shape = (CROP, CROP, 3)
  test_views = (1, 10)  # views per test image it offers: the centre crop, or the paper's ten

  def __init__(self, data_cfg):
    if data_cfg.augment_on not in AUGMENT_ON:
      raise ConfigError(f'data.augment_on {data_cfg.augment_on!r} is unknown; choose one of {", ".join(AUGMENT_ON)}')
    self.augment_on = data_cfg.augment_on
    tfds_dir = os.path.expanduser(data_cfg.tfds_dir)
    if data_cfg.fake_images:  # in a directory of its own: never mixed with a real prepared imagenet2012
      tfds_dir = os.path.join(tfds_dir, f'fake_imagenet2012_{data_cfg.fake_images}')
      manual = write_fake_manual_dir(os.path.join(tfds_dir, 'manual'), images=data_cfg.fake_images)
    else:
      manual = manual_dir(data_cfg)
    self._builder = builder(tfds_dir, manual)
    splits = self._builder.info.splits
    self.num_train = min(data_cfg.num_train or splits['train'].num_examples, splits['train'].num_examples)
    self.num_test = min(data_cfg.num_test or splits['validation'].num_examples, splits['validation'].num_examples)
    self.class_names = tuple(self._builder.info.features['label'].names)
    self.num_classes = len(self.class_names)
    self._shuffle_buffer = min(data_cfg.shuffle_buffer, self.num_train)
    if data_cfg.pca not in PCA:
      raise ConfigError(f'data.pca {data_cfg.pca!r} is unknown; choose one of {", ".join(PCA)}')
    self._mean, eigval, eigvec = image_statistics(self._builder, data_cfg.mean_images, tfds_dir)
    self._eig = (eigval, eigvec) if data_cfg.pca == 'computed' else (EIGVAL, EIGVEC)

  def _split(self, name, n, *, shuffle_seed=None):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    read = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    return self._builder.as_dataset(split=f'{name}[:{n}]', shuffle_files=shuffle_seed is not None,
                                    decoders={'image': tfds.decode.SkipDecoding()}, read_config=read)

  def _centred(self, x):
    return decode_resize_crop(x['image']) - self._mean

  def _uint8(self, x):
    t = pipeline.tf()
    return {'image': decode_uint8(x['image']), 'label': t.cast(x['label'], t.int32)}

  @property
  def device_train(self):
    """With augment_on='device': (batch, key) -> the step's inputs (data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean, (eigval, eigvec) = jnp.asarray(self._mean), (jnp.asarray(e) for e in self._eig)
    return lambda batch, key: {**batch, 'image': augment_lib.train_views(batch['image'], key, mean, eigval, eigvec,
                                                                        PCA_STD)}

  def device_test(self, crops):
    """With augment_on='device': batch -> its `crops` views (data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean = jnp.asarray(self._mean)
    return lambda batch: {**batch, 'image': augment_lib.test_views(batch['image'], mean, crops)}

  def train_batches(self, *, batch_size, seed, epoch, skip_batches=0, process=(0, 1)):
    t, es = pipeline.tf(), pipeline.epoch_seed(seed, epoch)
    ds = self._split('train', self.num_train, shuffle_seed=es % (2 ** 31))
    return pipeline.train_batches(
        ds, num_examples=self.num_train, shuffle_buffer=self._shuffle_buffer,
        batch_size=batch_size, seed=seed, epoch=epoch, skip_batches=skip_batches, process=process,
        augment=(lambda x, s: self._uint8(x)) if self.augment_on == 'device' else (
            lambda x, s: {'image': augment(self._centred(x), s, *self._eig), 'label': t.cast(x['label'], t.int32)}))

  def test_batches(self, *, batch_size, crops=1, process=(0, 1)):
    t = pipeline.tf()
    ds = self._split('validation', self.num_test)
    return pipeline.eval_batches(
        ds, num_examples=self.num_test, batch_size=batch_size, process=process,
        preprocess=self._uint8 if self.augment_on == 'device' else (
            lambda x: {'image': eval_crops(self._centred(x), crops), 'label': t.cast(x['label'], t.int32)}))


def image_statistics(b, num_images, cache_dir):
  """(mean image (256, 256, 3) in 0..255, eigval (3,), eigvec (3, 3)) of the first num_images training images
  (0: all), from one pass and cached beside the prepared data as .npz: the per-pixel mean of their central
  256x256 crops, and the eigen-decomposition of the RGB covariance of all those pixels scaled to [0, 1],
  eigenvalues descending, each eigenvector's largest entry positive."""
  n_all = b.info.splits['train'].num_examples
  n = min(num_images or n_all, n_all)
  path = os.path.join(cache_dir, f'{NAME}_statistics_{b.version}_{n}.npz')
  if os.path.exists(path):
    with np.load(path) as f:
      return f['mean'], f['eigval'], f['eigvec']
  import tensorflow_datasets as tfds  # noqa: PLC0415

  t = pipeline.tf()
  ds = b.as_dataset(split=f'train[:{n}]', decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False)
  ds = ds.map(lambda x: decode_resize_crop(x['image']), num_parallel_calls=t.data.AUTOTUNE).batch(256)
  total = np.zeros((RESIZE, RESIZE, 3), np.float64)
  moments = np.zeros((3, 3), np.float64)  # sum of the outer products of the pixels' RGB, scaled to [0, 1]
  for batch in ds.as_numpy_iterator():
    total += batch.astype(np.float64).sum(0)
    rgb = batch.reshape(-1, 3).astype(np.float64) / 255.0
    moments += rgb.T @ rgb
  mean = total / n
  pixel_mean = mean.reshape(-1, 3).mean(0) / 255.0
  covariance = moments / (n * RESIZE * RESIZE) - np.outer(pixel_mean, pixel_mean)
  eigval, eigvec = np.linalg.eigh(covariance)
  eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
  eigvec = eigvec * np.sign(eigvec[np.abs(eigvec).argmax(0), range(3)])
  out = {'mean': mean.astype(np.float32), 'eigval': eigval.astype(np.float32), 'eigvec': eigvec.astype(np.float32)}
  buf = io.BytesIO()
  np.savez(buf, **out)
  files.write_bytes(path, buf.getvalue())
  return out['mean'], out['eigval'], out['eigvec']


# ------------------------------------------------------------------------------------------------ fake data


def write_fake_manual_dir(directory, *, images=24, classes=3, seed=0, damaged_val=()):
  """Tiny ILSVRC2012 train and val archives in the real layout, with `images` JPEGs each (if not there yet).

  Train: `classes` synsets (the first ones of TFDS's label list), images split among them, sizes from 60 to 160
  pixels per side. Val: `images` JPEGs named ILSVRC2012_val_%08d.JPEG, which TFDS labels from its own list.
  Each class has its own mean colour, so a net can learn something from them. The validation images whose
  indices are in `damaged_val` are cut short to half their bytes (a damaged download).
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415

  marker = os.path.join(directory, f'.fake_{images}_{classes}_{seed}_{"_".join(map(str, damaged_val))}')
  if os.path.exists(marker):
    return directory
  os.makedirs(directory, exist_ok=True)
  t = pipeline.tf()
  rng = np.random.default_rng(seed)
  with open(tfds.core.tfds_path('datasets/imagenet2012/labels.txt')) as f:
    synsets = f.read().split()[:classes]

  def jpeg(label):
    h, w = rng.integers(60, 161, 2)
    base = rng.normal(0, 30, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])
    pixels = np.clip(colour + base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    return t.io.encode_jpeg(pixels, quality=90).numpy()

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  with tarfile.open(os.path.join(directory, TRAIN_TAR), 'w') as train:
    for c, synset in enumerate(synsets):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as class_tar:
        for i in range(c, images, classes):
          add(class_tar, f'{synset}_{i}.JPEG', jpeg(c))
      add(train, f'{synset}.tar', inner.getvalue())
  with tarfile.open(os.path.join(directory, VAL_TAR), 'w') as val:
    for i in range(images):
      data = jpeg(int(rng.integers(classes)))
      add(val, f'ILSVRC2012_val_{i + 1:08d}.JPEG', data[:len(data) // 2] if i in damaged_val else data)
  with open(marker, 'w') as f:
    f.write(hashlib.sha256(repr((images, classes, seed)).encode()).hexdigest())
  return directory


def main(argv=None):
  """python -m data.imagenet --tfds_dir=DIR [--manual_dir=DIR] [--mean_images=N]: prepare once, e.g. on the
  shared storage of a cluster before a multi-process job (preparing takes hours; processes waiting for it would
  time out)."""
  import argparse  # noqa: PLC0415

  tf_host.quiet()
  p = argparse.ArgumentParser(description=main.__doc__.split(':')[0])
  p.add_argument('--tfds_dir', default=os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))
  p.add_argument('--manual_dir', default='')
  p.add_argument('--mean_images', type=int, default=0, help='training images in the per-pixel mean (0: all)')
  args = p.parse_args(argv)
  tfds_dir = os.path.expanduser(args.tfds_dir)

  try:
    b = builder(tfds_dir, manual_dir(types.SimpleNamespace(manual_dir=args.manual_dir, tfds_dir=tfds_dir)))
  except DataError as e:
    p.exit(2, f'error: {e}\n')
  image_statistics(b, args.mean_images, tfds_dir)
  print(f'imagenet2012 {b.version} is prepared in {tfds_dir}: {b.info.splits["train"].num_examples} training and '
        f'{b.info.splits["validation"].num_examples} validation images; mean image and PCA statistics cached')


if __name__ == '__main__':
  main()
