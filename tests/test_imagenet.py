"""ImageNet through TFDS's real imagenet2012 builder, on fake archives in ImageNet's format: preparation, the
prepared store (resumable, verified, read 1/P per process), the paper's preprocessing, 10 crops, resumable order,
and the missing-data messages."""

import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from tests.helpers import data_cfg
from tests.helpers import ROOT
from tests.helpers import USER_ENV
from trainnets.data import augment
from trainnets.data import imagenet
from trainnets.data import imagenet_store
from trainnets.data import imagenet_tfds
from trainnets.data import pipeline
from trainnets.errors import DataError


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def fake(root):
  return imagenet.Dataset(data_cfg(root, augment_on='host'))


@pytest.fixture(scope='module')
def fake_builder(root, fake):
  """TFDS's prepared fake imagenet2012 that the store of `fake` was built from."""
  tfds_dir = root / 'fake_imagenet2012_12'
  return imagenet_tfds.builder(str(tfds_dir), str(tfds_dir / 'manual'))


def test_with_device_augmentation_the_host_sends_decoded_uint8_images(fake, root):
  dev = imagenet.Dataset(data_cfg(root))
  assert dev.augment_on == 'device' and fake.device_train is None and fake.device_test(10) is None
  full = list(dev.train_batches(batch_size=4, seed=0, epoch=0))
  assert full[0]['image'].shape == (4, 256, 256, 3) and full[0]['image'].dtype == np.uint8
  resumed = list(dev.train_batches(batch_size=4, seed=0, epoch=0, skip_batches=1))
  np.testing.assert_array_equal(full[1]['image'], resumed[0]['image'])
  batch = next(dev.eval_batches('test', batch_size=4, crops=10))
  assert batch['image'].shape == (4, 256, 256, 3) and dev.device_test(10)(batch)['image'].shape == (4, 10, 224, 224, 3)
  views = dev.device_train(batch, jax.random.PRNGKey(0))['image']
  assert views.shape == (4, 224, 224, 3) and views.dtype == np.float32


def test_fake_archives_prepare_through_the_real_builder(fake):
  assert (fake.num_train, fake.num_test, fake.num_classes) == (12, 12, 1000)
  assert fake.class_names[0] == 'n01440764'
  assert fake._mean.shape == (256, 256, 3) and 20 < fake._mean.mean() < 235


def test_mean_image_and_pca_statistics_come_from_the_training_pixels(fake, root):
  """The store's pass computes both, from the images training reads (the stored JPEGs, decoded); against
  numpy's mean and covariance of those pixels, scaled to [0, 1]."""
  encoded, _ = fake.store.read('train', range(12))
  images = np.stack([imagenet_store.decode_256(e).numpy() for e in encoded]).astype(np.float64)
  np.testing.assert_allclose(fake._mean, images.mean(0), rtol=1e-5, atol=1e-3)
  eigval, eigvec = fake._eig
  want_val, want_vec = np.linalg.eigh(np.cov(images.reshape(-1, 3).T / 255.0, bias=True))
  np.testing.assert_allclose(eigval, want_val[::-1], rtol=1e-4)
  np.testing.assert_allclose(np.abs(eigvec), np.abs(want_vec[:, ::-1]), rtol=1e-3, atol=1e-4)
  assert not np.allclose(eigval, imagenet.EIGVAL), 'computed, not the published set'
  published = imagenet.Dataset(data_cfg(root, pca='published'))
  assert published._eig[0] is imagenet.EIGVAL and published._eig[1] is imagenet.EIGVEC


def test_training_batches_crops_flips_colour_and_resume(fake):
  full = list(fake.train_batches(batch_size=4, seed=0, epoch=0))
  assert len(full) == 3 and full[0]['image'].shape == (4, 224, 224, 3) and full[0]['image'].dtype == np.float32
  assert sorted(np.concatenate([b['label'] for b in full])) == [0] * 4 + [1] * 4 + [2] * 4
  again = list(fake.train_batches(batch_size=4, seed=0, epoch=0))
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  resumed = list(fake.train_batches(batch_size=4, seed=0, epoch=0, skip_batches=1))
  for a, b in zip(full[1:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  labels = np.concatenate([b['label'] for b in full])
  other = np.concatenate([b['label'] for b in fake.train_batches(batch_size=4, seed=0, epoch=1)])
  assert sorted(other) == sorted(labels) and not np.array_equal(other, labels), 'each epoch: the same, reordered'


def test_augmentation_is_a_crop_a_flip_and_one_colour_shift():
  t = pipeline.tf()
  image = t.constant(np.random.default_rng(0).uniform(-100, 100, (256, 256, 3)).astype(np.float32))
  seed = t.constant([7, 3], t.int64)
  out = imagenet.augment(image, seed).numpy()
  assert out.shape == (224, 224, 3)
  np.testing.assert_array_equal(out, imagenet.augment(image, seed).numpy())
  # the output, less one RGB shift, is some 224x224 window of the image or of its mirror image
  src = image.numpy()
  found = []
  for img in (src, src[:, ::-1]):
    for y in range(33):
      for x in range(33):
        shift = out - img[y:y + 224, x:x + 224]
        if np.allclose(shift, shift[0, 0], atol=1e-3):
          found.append(shift[0, 0])
  assert len(found) == 1
  # the shift lies in the span of the colour eigenvectors weighted by the eigenvalues, with |alpha| ~ 0.1
  alpha = np.linalg.solve(imagenet.EIGVEC * imagenet.EIGVAL[None, :], found[0] / 255.0)
  assert np.all(np.abs(alpha) < 0.6) and np.any(alpha != 0)


def test_ten_crops_are_corners_centre_and_mirrors():
  t = pipeline.tf()
  img = np.arange(256 * 256 * 3, dtype=np.float32).reshape(256, 256, 3)
  crops = imagenet.eval_crops(t.constant(img), 10).numpy()
  assert crops.shape == (10, 224, 224, 3)
  np.testing.assert_array_equal(crops[0], img[:224, :224])
  np.testing.assert_array_equal(crops[3], img[32:, 32:])
  np.testing.assert_array_equal(crops[4], img[16:240, 16:240])
  np.testing.assert_array_equal(crops[5], img[:224, :224][:, ::-1])
  np.testing.assert_array_equal(imagenet.eval_crops(t.constant(img), 1).numpy(), crops[4])


def test_shorter_side_to_256_then_central_crop():
  t = pipeline.tf()
  img = np.zeros((100, 300, 3), np.uint8)
  img[:, 130:170] = 255  # a bright vertical band in the middle survives the central crop
  out = imagenet_store.decode_resize_crop(t.io.encode_jpeg(img, quality=100)).numpy()
  assert out.shape == (256, 256, 3)
  assert out[:, 128].mean() > 200 and out[:, 5].mean() < 30


def test_eval_batches_pad_and_mask(fake):
  batches = list(fake.eval_batches('test', batch_size=5, crops=10))
  assert [b['image'].shape for b in batches] == [(5, 10, 224, 224, 3)] * 3
  assert [b['mask'].sum() for b in batches] == [5, 5, 2]


def test_missing_archives_get_one_line(tmp_path, monkeypatch):
  monkeypatch.delenv(imagenet_tfds.ENV_VAR, raising=False)
  with pytest.raises(DataError, match='ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar not in') as e:
    imagenet.Dataset(data_cfg(tmp_path, fake_images=0))
  assert '\n' not in str(e.value) and 'image-net.org' in str(e.value)
  assert str(tmp_path / 'downloads' / 'manual') in str(e.value)
  monkeypatch.setenv(imagenet_tfds.ENV_VAR, str(tmp_path / 'elsewhere'))
  assert imagenet_tfds.manual_dir(data_cfg(tmp_path)) == str(tmp_path / 'elsewhere')


def test_a_damaged_jpeg_is_named_at_preparation(tmp_path):
  manual = imagenet_tfds.write_fake_manual_dir(str(tmp_path / 'manual'), images=6, damaged_val=(3,))
  with pytest.raises(DataError, match='1 image.* do not decode as JPEG \\(validation/ILSVRC2012_val_00000004.JPEG\\)'):
    imagenet_tfds.builder(str(tmp_path / 'tfds'), manual)


def test_a_truncated_archive_gets_one_line_from_prepare(tmp_path):
  manual = imagenet_tfds.write_fake_manual_dir(str(tmp_path / 'manual'), images=6)
  tar = os.path.join(manual, imagenet_tfds.TRAIN_TAR)
  os.truncate(tar, os.path.getsize(tar) // 2)
  proc = subprocess.run([sys.executable, '-m', 'trainnets.data.imagenet_store', f'--tfds_dir={tmp_path / "tfds"}',
                         f'--manual_dir={manual}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=USER_ENV)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: preparing imagenet2012 from the archives in') and 'are complete' in last, last


def test_prepared_files_that_changed_since_verification_are_refused(fake_builder, tmp_path):
  b = fake_builder
  assert os.path.exists(os.path.join(b.data_dir, imagenet_tfds.VERIFIED))
  imagenet_tfds.verify(b)  # unchanged: passes without decoding again
  copy = tmp_path / 'copy'
  subprocess.run(['cp', '-r', b.data_dir, str(copy)], check=True)
  record = sorted(f for f in os.listdir(copy) if '-train.tfrecord' in f)[0]
  os.truncate(copy / record, 10)
  with pytest.raises(DataError, match=f'changed since it was verified \\({record}\\)'):
    imagenet_tfds.verify(types.SimpleNamespace(data_dir=str(copy)))


def test_device_augmentation_is_a_crop_a_flip_and_one_colour_shift_of_the_centred_image():
  """trainnets/data/augment.py, the accelerator's form of `augment`: the same operations, deterministic in the key."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 256, 256, 3)).astype(np.uint8)
  mean = rng.uniform(0, 255, (256, 256, 3)).astype(np.float32)
  key = jax.random.PRNGKey(5)
  out = np.asarray(augment.train_views(images, key, mean, imagenet.EIGVAL, imagenet.EIGVEC))
  assert out.shape == (3, 224, 224, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, augment.train_views(images, key, mean, imagenet.EIGVAL, imagenet.EIGVEC))
  for i in range(3):
    src = images[i].astype(np.float32) - mean
    found = [out[i, 0, 0] - img[y, x] for img in (src, src[:, ::-1]) for y in range(33) for x in range(33)
             if np.allclose(out[i, :3, :3] - img[y:y + 3, x:x + 3], out[i, 0, 0] - img[y, x], atol=1e-3)  # cheap
             and np.allclose(out[i] - img[y:y + 224, x:x + 224], out[i, 0, 0] - img[y, x], atol=1e-3)]
    assert len(found) == 1
    alpha = np.linalg.solve(imagenet.EIGVEC * imagenet.EIGVAL[None, :], found[0] / 255.0)
    assert np.all(np.abs(alpha) < 0.6)


@pytest.mark.slow
@pytest.mark.parametrize('positions', [32, 33])
def test_device_and_host_augmentation_draw_from_the_same_distributions(positions):
  """Different generators (JAX keys, TF stateless seeds), the same distributions: crop offsets uniform over
  0..positions-1 in each direction (32: the paper's 2,048 views with the flip) and a fair flip, read back from 2,000
  images whose pixels encode their coordinates (the colour shift's span and size are checked image by image above
  and in test_augmentation_is_...)."""
  n = 2000
  y, x = np.meshgrid(np.arange(256), np.arange(256), indexing='ij')
  coords = np.stack([y, x, np.zeros_like(y)], -1).astype(np.float32)  # channel 0: row, 1: column
  zero_pca = np.zeros(3, np.float32)
  dev = np.asarray(augment.train_views(np.broadcast_to(coords, (n, 256, 256, 3)), jax.random.PRNGKey(1),
                                       np.zeros((256, 256, 3), np.float32), zero_pca, imagenet.EIGVEC,
                                       positions=positions))
  t = pipeline.tf()
  host = np.stack([imagenet.augment(t.constant(coords), t.constant([1, i], t.int64), zero_pca, imagenet.EIGVEC,
                                    positions) for i in range(n)])
  for views in (dev, host):
    rows, flipped = views[:, 0, 0, 0], views[:, 0, 0, 1] > views[:, 0, 1, 1]
    cols = np.where(flipped, views[:, 0, 0, 1] - 223, views[:, 0, 0, 1])
    last, middle = positions - 1, (positions - 1) / 2
    assert rows.min() == 0 and rows.max() == last and cols.min() == 0 and cols.max() == last
    assert abs(rows.mean() - middle) < 0.7 and abs(cols.mean() - middle) < 0.7 and abs(flipped.mean() - 0.5) < 0.04


@pytest.mark.parametrize('crops', [1, 10])
def test_device_test_views_equal_the_host_ones(crops):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 256, 256, 3)).astype(np.uint8)
  mean = rng.uniform(0, 255, (256, 256, 3)).astype(np.float32)
  t = pipeline.tf()
  host = np.stack([imagenet.eval_crops(t.constant(im.astype(np.float32) - mean), crops).numpy() for im in images])
  np.testing.assert_array_equal(augment.test_views(images, mean, crops), host)


def test_validation_images_are_held_out_of_training(root):
  """data.num_validation training images, stratified by class, are evaluated as 'validation' and never trained on;
  'test' stays ILSVRC 2012's validation set."""
  held = imagenet.Dataset(data_cfg(root, augment_on='device', num_validation=3))
  assert (held.num_train, held.num_validation, held.num_test) == (9, 3, 12)
  train = np.concatenate([b['image'] for b in held.train_batches(batch_size=3, seed=0, epoch=0)])
  val = list(held.eval_batches('validation', batch_size=2))
  val_images = np.concatenate([b['image'][b['mask'] > 0] for b in val])
  assert len(val_images) == 3 and sorted(np.concatenate([b['label'][b['mask'] > 0] for b in val])) == [0, 1, 2]
  assert not any((train == v).all(axis=(1, 2, 3)).any() for v in val_images), 'no validation image is trained on'
  trained = np.concatenate([b['label'] for b in held.train_batches(batch_size=3, seed=0, epoch=0)]).tolist()
  assert sorted(trained + [0, 1, 2]) == sorted(held.store.read('train', range(12))[1].tolist())
  test = list(held.eval_batches('test', batch_size=4))
  assert sum(b['mask'].sum() for b in test) == 12
