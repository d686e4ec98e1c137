"""ImageNet (ILSVRC 2012) through TFDS's `imagenet2012` builder, with the AlexNet paper's preprocessing.

The data: TFDS's imagenet2012 builder prepares ImageNet's two archives (trainnets/data/imagenet_tfds.py says where they
go); one pass over its records then writes the prepared store of 256x256 images that training reads
(trainnets/data/imagenet_store.py, which also computes the statistics below).

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
step does the rest on the accelerator (trainnets/data/augment.py). With 'host', tf.data does it with TF's stateless
random ops seeded by (epoch seed, position in the epoch). Either way a resumed run augments every image exactly as the
uninterrupted one did, and each process of a job reads and decodes only its share (trainnets/data/store.py).
"""
import os

import jax.numpy as jnp
import numpy as np

from trainnets import errors
from trainnets.data import augment as augment_lib
from trainnets.data import imagenet_store
from trainnets.data import pipeline
from trainnets.data import sampler
from trainnets.data import store as store_lib
from trainnets.data.augment import CROP
from trainnets.data.augment import RESIZE

NAME = 'imagenet2012'
# Eigen-decomposition of the RGB covariance of ImageNet's training pixels (scaled to [0, 1]), as published with
# fb.resnet.torch and used by most reproductions (data.pca='published'); columns of EIGVEC are the eigenvectors.
EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]], np.float32)
PCA_STD = 0.1
PCA = ('computed', 'published')
AUGMENT_ON = ('device', 'host')


# ----------------------------------------------------------------------------------------- per-image transforms


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


def _stored(encoded, label, position):
  """A store example as the host sends it when the accelerator augments: the decoded uint8 image and its label."""
  del position
  return {'image': imagenet_store.decode_256(encoded), 'label': label}


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
    self.store = imagenet_store.open_or_prepare(data_cfg)
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
    with np.load(os.path.join(self.store.directory, imagenet_store.STATISTICS)) as z:
      self._mean, eigval, eigvec = z['mean'], z['eigval'], z['eigvec']
    self._eig = (eigval, eigvec) if data_cfg.pca == 'computed' else (EIGVAL, EIGVEC)

  def _centred(self, encoded):
    """A stored image as float32, minus the mean image (the host path's input to its crops)."""
    t = pipeline.tf()
    return t.cast(imagenet_store.decode_256(encoded), t.float32) - self._mean

  @property
  def device_train(self):
    """With augment_on='device': (batch, key) -> the step's inputs (trainnets/data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean, (eigval, eigvec) = jnp.asarray(self._mean), (jnp.asarray(e) for e in self._eig)
    return lambda batch, key: {**batch, 'image': augment_lib.train_views(batch['image'], key, mean, eigval, eigvec,
                                                                        PCA_STD, self._positions)}

  def device_test(self, crops):
    """With augment_on='device': batch -> its `crops` views (trainnets/data/augment.py), else None."""
    if self.augment_on != 'device':
      return None
    mean = jnp.asarray(self._mean)
    return lambda batch: {**batch, 'image': augment_lib.test_views(batch['image'], mean, crops)}

  def train_batches(self, *, batch_size, seed, epoch, skip_batches=0, process=(0, 1)):
    t, es = pipeline.tf(), sampler.epoch_seed(seed, epoch)
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
