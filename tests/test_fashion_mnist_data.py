"""Fashion-MNIST: finding and verifying the original files, TFDS preparation, and the input pipeline."""
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from experiments import fashion_mnist as experiment
from tests.helpers import assert_one_line_error
from tests.helpers import ROOT
from tests.helpers import USER_ENV
from trainnets.data import fashion_mnist
from trainnets.data import pipeline
from trainnets.errors import ConfigError
from trainnets.errors import DataError


def write_idx_set(d, tamper=None):
  """Four small files in IDX format (wrong content for the real hashes, unless nothing is checked)."""
  os.makedirs(d, exist_ok=True)
  for name in fashion_mnist.IDX_SHA256:
    data = b'\x00\x00\x08\x03' + bytes(range(64)) if 'images' in name else b'\x00\x00\x08\x01' + bytes(8)
    if name == tamper:
      data += b'!'
    with gzip.open(os.path.join(d, name + '.gz'), 'wb') as f:
      f.write(data)


def no_local_files(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', str(tmp_path / 'no_debian'))
  monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)


@pytest.mark.slow
def test_without_local_files_tfds_downloads_and_prepares_it(tmp_path, monkeypatch):
  """No local files: TFDS's own builder fetches its registered URLs (a stubbed download manager stands in for the
  network, serving the real files where this machine has them) and prepares the same dataset."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  try:
    real = fashion_mnist.find_sources()
  except DataError:
    pytest.skip('the Fashion-MNIST files are not on this machine to stand in for the network')
  served = {name: fashion_mnist.verified_idx(path, name, str(tmp_path)) for name, path in real.items()}
  asked = []

  def download_and_extract(self, url_or_urls):
    del self
    asked.extend(url_or_urls.values())
    return {k: served[os.path.basename(url).removesuffix('.gz')] for k, url in url_or_urls.items()}

  no_local_files(tmp_path, monkeypatch)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract', download_and_extract)
  b = fashion_mnist.builder(str(tmp_path / 'tfds'))
  assert b.is_prepared() and b.info.splits['train'].num_examples == 60_000
  assert sorted(os.path.basename(u) for u in asked) == sorted(n + '.gz' for n in fashion_mnist.IDX_SHA256)
  assert all(u.startswith(('http://', 'https://')) for u in asked), 'TFDS\'s registered URLs'


def test_an_unprepared_builder_leaves_no_temporary_directory(tmp_path, monkeypatch):
  """TFDS's builder of an unprepared dataset makes a directory in the temporary one and leaves it there, empty."""
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
  os.makedirs(tmp_path / 'tmp')
  _, prepared = pipeline.tfds_builder(fashion_mnist.NAME, str(tmp_path / 'tfds'))
  assert not prepared
  assert os.listdir(tmp_path / 'tmp') == []
  assert tempfile.gettempdir() == str(tmp_path / 'tmp')


def test_preparing_leaves_no_temporary_files(fashion_mnist_preparation):
  assert fashion_mnist_preparation[1] == []


def test_offline_without_local_files_says_both_ways_in_one_line(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # noqa: PLC0415

  def offline(self, url_or_urls):
    raise ConnectionError(f'cannot reach {next(iter(url_or_urls.values()))}')

  no_local_files(tmp_path, monkeypatch)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract', offline)
  with pytest.raises(DataError) as e:
    fashion_mnist.builder(str(tmp_path / 'tfds'))
  message = str(e.value)
  assert '\n' not in message and 'ConnectionError: cannot reach http' in message
  assert 'connect this machine to the network' in message and 'apt-get install dataset-fashion-mnist' in message


def test_missing_files_get_one_line_saying_how_to_get_them(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', str(tmp_path / 'no_debian'))
  monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
  with pytest.raises(DataError, match='apt-get install dataset-fashion-mnist') as e:
    fashion_mnist.find_sources()
  assert '\n' not in str(e.value)
  os.makedirs(tmp_path / 'partial')
  (tmp_path / 'partial' / 'train-images-idx3-ubyte.gz').write_bytes(b'')
  with pytest.raises(DataError, match='lacks .*t10k-images-idx3-ubyte.gz'):
    fashion_mnist.find_sources(str(tmp_path / 'partial'))


def test_sources_found_in_the_configured_dir_then_env(tmp_path, monkeypatch):
  write_idx_set(tmp_path / 'a')
  write_idx_set(tmp_path / 'b')
  monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / 'b'))
  assert all(p.startswith(str(tmp_path / 'a')) for p in fashion_mnist.find_sources(str(tmp_path / 'a')).values())
  assert all(p.startswith(str(tmp_path / 'b')) for p in fashion_mnist.find_sources('').values())


def test_content_that_differs_from_the_original_is_refused(tmp_path):
  write_idx_set(tmp_path / 'fake')
  name = 't10k-labels-idx1-ubyte'
  with pytest.raises(DataError, match=f'does not hold the original {name}'):
    fashion_mnist.verified_idx(str(tmp_path / 'fake' / (name + '.gz')), name, str(tmp_path))


def test_recompressed_original_content_is_accepted(tmp_path):
  """Debian's case: other .gz bytes, same content. Uses the real labels file where it exists."""
  try:
    src = fashion_mnist.find_sources()['t10k-labels-idx1-ubyte']
  except DataError:
    pytest.skip('the Fashion-MNIST files are not on this machine')
  with gzip.open(src, 'rb') as f:
    content = f.read()
  with gzip.open(tmp_path / 'recompressed.gz', 'wb', compresslevel=1) as f:  # other .gz bytes
    f.write(content)
  out = fashion_mnist.verified_idx(str(tmp_path / 'recompressed.gz'), 't10k-labels-idx1-ubyte', str(tmp_path))
  assert open(out, 'rb').read() == content


def dataset(tfds_dir, **kw):
  cfg = experiment.get_config('cnn').data  # every key the dataset reads, as an experiment sets it
  cfg.update({'tfds_dir': tfds_dir, 'random_flip': False, **kw})
  return fashion_mnist.Dataset(cfg)


def test_tfds_dataset_and_pipeline(fashion_mnist_tfds):
  import tensorflow_datasets as tfds  # noqa: PLC0415

  b = tfds.builder('fashion_mnist', data_dir=fashion_mnist_tfds)
  assert b.is_prepared() and b.info.splits['train'].num_examples == 60000
  assert b.info.features['label'].names == list(fashion_mnist.CLASSES)
  ds = dataset(fashion_mnist_tfds, num_train=1000, num_test=250)
  epoch0 = list(ds.train_batches(batch_size=64, seed=3, epoch=0))
  assert len(epoch0) == 1000 // 64, 'the partial last batch is dropped'
  assert epoch0[0]['image'].shape == (64, 28, 28, 1) and epoch0[0]['image'].dtype == np.float32
  assert abs(float(np.mean([b['image'].mean() for b in epoch0]))) < 0.1, 'normalised to mean ~0'
  again = list(ds.train_batches(batch_size=64, seed=3, epoch=0))
  assert all(np.array_equal(a['label'], b['label']) for a, b in zip(epoch0, again)), 'same seed, same order'
  resumed = list(ds.train_batches(batch_size=64, seed=3, epoch=0, skip_batches=6))
  assert np.array_equal(resumed[0]['image'], epoch0[6]['image']), 'a resumed epoch continues where it stopped'
  other = next(ds.train_batches(batch_size=64, seed=3, epoch=1))
  assert not np.array_equal(other['label'], epoch0[0]['label']), 'each epoch reshuffles'
  test = list(ds.eval_batches('test', batch_size=100))
  assert [len(b['mask']) for b in test] == [100, 100, 100] and sum(b['mask'].sum() for b in test) == 250


def test_pipelines_run_without_tf_data_autotuning(fashion_mnist_tfds, monkeypatch):
  """Deleting an autotuned iterator waited up to 11 s for its tuning thread, once per epoch
  (trainnets/data/pipeline.py)."""
  seen = []

  def spy(ds, autotune):
    out = real(ds, autotune)
    seen.append(out.options().autotune.enabled)
    return out

  real = pipeline.finish
  monkeypatch.setattr(pipeline, 'finish', spy)
  ds = dataset(fashion_mnist_tfds, num_train=256, num_test=100, random_flip=True)
  next(ds.train_batches(batch_size=64, seed=0, epoch=0))
  next(ds.eval_batches('test', batch_size=50))
  assert seen == [False, False]
  assert real(pipeline.tf().data.Dataset.range(3), True).options().autotune.enabled is not False


def test_random_flips_are_seeded_and_survive_a_resume(fashion_mnist_tfds):
  plain = dataset(fashion_mnist_tfds, num_train=640)
  flipped = dataset(fashion_mnist_tfds, num_train=640, random_flip=True)
  a = list(flipped.train_batches(batch_size=64, seed=1, epoch=2))
  b = list(flipped.train_batches(batch_size=64, seed=1, epoch=2, skip_batches=4))
  np.testing.assert_array_equal(a[4]['image'], b[0]['image'])
  ref = list(plain.train_batches(batch_size=64, seed=1, epoch=2))
  same = [np.array_equal(x, y) for x, y in zip(ref[0]['image'], a[0]['image'])]
  mirrored = [np.array_equal(x[:, ::-1], y) for x, y in zip(ref[0]['image'], a[0]['image'])]
  assert all(s or m for s, m in zip(same, mirrored)), 'each image is itself or its mirror image'
  assert 16 < sum(mirrored) < 48, 'about half are mirrored'
  np.testing.assert_array_equal(ref[0]['label'], a[0]['label'])


def test_train_py_with_missing_files_gets_one_line(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', '--config=experiments/fashion_mnist.py:mlp,quick',
                         f'--workdir={tmp_path / "w"}', f'--config.data.tfds_dir={tmp_path / "tfds"}',
                         f'--config.data.source_dir={tmp_path / "none"}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=USER_ENV)
  assert_one_line_error(proc, 'lacks', 'apt-get install dataset-fashion-mnist')


def test_a_truncated_source_file_is_named(tmp_path):
  write_idx_set(tmp_path / 'src')
  path = tmp_path / 'src' / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:20])
  with pytest.raises(DataError, match=f'{path} cannot be read .*replace it with the original file'):
    fashion_mnist.builder(str(tmp_path / 'tfds'), str(tmp_path / 'src'))


@pytest.mark.parametrize('kind', ['file', 'damaged'])
def test_an_unusable_tfds_data_dir_gets_one_line(tmp_path, kind):
  data_dir = tmp_path / 'tfds'
  if kind == 'file':
    data_dir.write_text('not a directory')
    fragment = 'is a file, not a directory'
  else:
    info = data_dir / 'fashion_mnist' / '3.0.1' / 'dataset_info.json'
    os.makedirs(info.parent)
    info.write_text('{"name": ')
    fragment = 'the prepared fashion_mnist in'
  proc = subprocess.run([sys.executable, 'train.py', '--config=experiments/fashion_mnist.py:mlp,quick',
                         f'--workdir={tmp_path / "w"}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**USER_ENV, 'TFDS_DATA_DIR': str(data_dir)})
  assert_one_line_error(proc, fragment, '$TFDS_DATA_DIR')
  assert not os.path.exists(tmp_path / 'w')


def test_validation_is_the_last_training_images_and_never_trained_on(fashion_mnist_tfds):
  import tensorflow_datasets as tfds  # noqa: PLC0415

  ds = dataset(fashion_mnist_tfds, num_train=0, num_validation=500, num_test=100)
  assert (ds.num_train, ds.num_validation, ds.num_test) == (59_500, 500, 100)
  val = list(ds.eval_batches('validation', batch_size=200))
  assert sum(b['mask'].sum() for b in val) == 500
  b = tfds.builder('fashion_mnist', data_dir=fashion_mnist_tfds)
  last = tfds.as_numpy(b.as_dataset(split='train[59500:]', shuffle_files=False, batch_size=-1))
  np.testing.assert_array_equal(np.concatenate([v['label'][v['mask'] > 0] for v in val]), last['label'])
  with pytest.raises(ConfigError, match='data.num_validation must be in 0..59999'):
    dataset(fashion_mnist_tfds, num_validation=60_000)
