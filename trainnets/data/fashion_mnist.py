"""Fashion-MNIST through TFDS: its standard `fashion_mnist` builder, fed from local files where they exist.

TFDS's builder downloads four .gz files and checks them against its registered checksums. This module first
looks for the same four files locally, in order:
  1. the config's `data.source_dir`,
  2. $FASHION_MNIST_DIR,
  3. /usr/share/datasets/fashion-mnist (Debian's package `dataset-fashion-mnist`),
and prepares the very same TFDS dataset (`fashion_mnist` 3.0.1, same features and splits) from them into
`data_dir`, offline. Without local files it lets TFDS download and prepare it (network needed); offline and
without files, one line says both ways to get it. Either way TFDS then loads it from `data_dir` like any
prepared dataset. Debian recompressed the files, so their .gz checksums
differ from the ones TFDS registered although the contents are identical: each file is verified by the sha256 of
its decompressed bytes instead, and a file whose content differs is refused. Verification is never switched off.
"""
import gzip
import hashlib
import os
import tempfile
import zlib

from trainnets import errors
from trainnets.data import pipeline
from trainnets.data import sampler
from trainnets.errors import ConfigError
from trainnets.errors import DataError

NAME = 'fashion_mnist'
# The training order (trainnets/data/sampler.py): the published Fashion-MNIST runs were made with tf.data's shuffle.
ORDER = 'tf.data'
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
ENV_VAR = 'FASHION_MNIST_DIR'
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
           'Ankle boot')
# sha256 of the decompressed IDX files (header included), as Zalando published them.
IDX_SHA256 = {
    'train-images-idx3-ubyte': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
    'train-labels-idx1-ubyte': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
    't10k-images-idx3-ubyte': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
    't10k-labels-idx1-ubyte': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
}
HOW_TO_GET = (f'install Debian\'s package (apt-get install dataset-fashion-mnist, files in {DEBIAN_DIR}), or put '
              'the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
              't10k-labels-idx1-ubyte.gz from github.com/zalandoresearch/fashion-mnist in a directory and pass '
              f'--config.data.source_dir=DIR or set ${ENV_VAR}')


def find_sources(source_dir=''):
  """{IDX name: path of its .gz or decompressed file} from the first directory that has all four."""
  candidates = [d for d in (source_dir, os.environ.get(ENV_VAR, ''), DEBIAN_DIR) if d]
  for d in candidates:
    found = {}
    for name in IDX_SHA256:
      for path in (os.path.join(d, name + '.gz'), os.path.join(d, name)):
        if os.path.isfile(path):
          found[name] = path
          break
    if len(found) == len(IDX_SHA256):
      return found
    if d == source_dir:
      missing = sorted(set(IDX_SHA256) - set(found))
      raise DataError(f'data.source_dir={d} lacks {", ".join(m + ".gz" for m in missing)}; {HOW_TO_GET}')
  raise DataError(f'Fashion-MNIST is not prepared in the TFDS data_dir and its files were not found in '
                  f'{", ".join(candidates)}; {HOW_TO_GET}, or let TFDS download them (network needed)')


def verified_idx(path, name, out_dir):
  """Decompresses `path` (if gzipped) into out_dir/name and checks its sha256; returns the new path."""
  target = os.path.join(out_dir, name)
  opener = gzip.open if path.endswith('.gz') else open
  digest = hashlib.sha256()
  try:
    with opener(path, 'rb') as src, open(target, 'wb') as dst:
      for chunk in iter(lambda: src.read(1 << 20), b''):
        digest.update(chunk)
        dst.write(chunk)
  except (OSError, EOFError, zlib.error) as e:  # a truncated or damaged .gz
    raise DataError(f'{path} cannot be read ({errors.one_line(e)}); replace it with the original file') from None
  if digest.hexdigest() != IDX_SHA256[name]:
    raise DataError(f'{path} does not hold the original {name} (sha256 of its content is {digest.hexdigest()}, '
                    f'expected {IDX_SHA256[name]}); replace it with the original file')
  return target


class _LocalFiles:
  """Stands in for TFDS's download manager: serves the verified local files for the builder's URLs."""

  def __init__(self, paths):
    self._paths = paths

  def download_and_extract(self, url_or_urls):
    return {k: self._paths[os.path.basename(url).removesuffix('.gz')] for k, url in url_or_urls.items()}


def _download_and_prepare(b, data_dir, not_found):
  """TFDS's own download_and_prepare (the four files from TFDS's URLs, checked by its registered checksums)."""
  try:
    with pipeline.native_stderr_held():
      b.download_and_prepare()
  except Exception as e:  # noqa: BLE001 (no network, a proxy, a checksum: TFDS raises many types)
    raise DataError(f'{not_found}; TFDS could not download them either ({errors.one_line(e)}): connect this '
                    f'machine to the network and run again, or {HOW_TO_GET}') from None
  return b


def builder(data_dir, source_dir=''):
  """The TFDS builder of fashion_mnist in data_dir, prepared if it is not there yet: from local files first,
  else by TFDS's download."""
  import tensorflow_datasets as tfds  # noqa: PLC0415 (heavy: imported only by the experiments that need it)

  b, prepared = pipeline.tfds_builder(NAME, data_dir)
  if prepared:
    return b
  try:
    sources = find_sources(source_dir)
  except DataError as e:
    if source_dir:  # the user named a directory: what it lacks is the error
      raise
    return _download_and_prepare(b, data_dir, str(e).split('; ')[0])
  from tensorflow_datasets.image_classification import mnist  # noqa: PLC0415

  with tempfile.TemporaryDirectory(prefix='fashion_mnist_idx_') as tmp:
    paths = {name: verified_idx(path, name, tmp) for name, path in sources.items()}

    with tfds.core.registered.skip_registration():

      class OfflineFashionMNIST(mnist.FashionMNIST):
        name = NAME  # the same dataset, so tfds.builder('fashion_mnist') loads what this prepares

        def _split_generators(self, dl_manager):
          del dl_manager
          return super()._split_generators(_LocalFiles(paths))

    with pipeline.temporary_files_removed():
      offline = OfflineFashionMNIST(data_dir=data_dir)
    offline.download_and_prepare()
  b = tfds.builder(NAME, data_dir=data_dir)
  if not b.is_prepared():
    raise DataError(f'preparing fashion_mnist in {data_dir} did not complete; remove {data_dir}/{NAME} and retry')
  return b


MEAN, STD = 0.2860, 0.3530  # of the training images, scaled to [0, 1]


class Dataset:
  """Fashion-MNIST for the classifier trainer: both splits held in memory, and their tf.data pipelines."""

  image_shape = (28, 28, 1)
  num_classes = len(CLASSES)
  class_names = CLASSES
  test_views = (1,)  # views per test image it offers: the image itself

  def __init__(self, data_cfg):
    self._random_flip = data_cfg.random_flip
    self._random_shift = data_cfg.random_shift
    if not 0 <= self._random_shift < 14:
      raise ConfigError(f'data.random_shift must be in 0..13 pixels, got {self._random_shift}')
    b = builder(os.path.expanduser(data_cfg.tfds_dir), data_cfg.source_dir)
    total = b.info.splits['train'].num_examples
    if not 0 <= data_cfg.num_validation < total:
      raise ConfigError(f'data.num_validation must be in 0..{total - 1} (the last training images, held out), got '
                        f'{data_cfg.num_validation}')
    available = total - data_cfg.num_validation
    self.num_train = min(data_cfg.num_train or available, available)
    self.num_validation = data_cfg.num_validation
    self.num_test = min(data_cfg.num_test or b.info.splits['test'].num_examples,
                        b.info.splits['test'].num_examples)
    self._train = self._in_memory(b, f'train[:{self.num_train}]')
    self._validation = self._in_memory(b, f'train[{available}:]') if self.num_validation else None
    self._test = self._in_memory(b, f'test[:{self.num_test}]')

  @staticmethod
  def _in_memory(b, split):
    """A TFDS split (slice) in memory: {'image', 'label'} arrays (47 MB for all training images)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    try:
      with pipeline.native_stderr_held():
        arrays = tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False, batch_size=-1))
    except pipeline.tf().errors.OpError as e:  # e.g. a truncated TFRecord
      raise DataError(f'the prepared {NAME} in {b.data_dir} cannot be read ({errors.one_line(e)}); remove '
                      f'{b.data_dir} to prepare it again') from None
    return arrays

  @staticmethod
  def _preprocess(x):
    t = pipeline.tf()
    image = (t.cast(x['image'], t.float32) / 255.0 - MEAN) / STD
    return {'image': image, 'label': t.cast(x['label'], t.int32)}

  def _augment(self, x, seed):
    """Mirror left-right with probability 1/2 (clothes stay the same class) and/or translate by up to
    `random_shift` pixels each way (zero padding, the background, then a random 28x28 crop)."""
    t = pipeline.tf()
    image = x['image']
    if self._random_shift:
      seed, crop_seed = t.unstack(t.random.experimental.stateless_split(seed, 2))
      s = self._random_shift
      image = t.image.stateless_random_crop(t.pad(image, [[s, s], [s, s], [0, 0]]), t.shape(image), crop_seed)
    if self._random_flip:
      image = t.image.stateless_random_flip_left_right(image, seed)
    return {**x, 'image': image}

  def train_batches(self, *, batch_size, seed, epoch, skip_batches=0, process=(0, 1)):
    augment = self._augment if (self._random_flip or self._random_shift) else None
    rows, positions = sampler.train_rows(self.num_train, batch_size, seed, epoch, skip_batches, order=ORDER)
    return pipeline.train_batches(self._train, rows, positions, epoch_seed=sampler.epoch_seed(seed, epoch),
                                  preprocess=self._preprocess, augment=augment, process=process, autotune=False)

  def eval_batches(self, split, *, batch_size, process=(0, 1)):
    """split 'validation': the last data.num_validation training images; 'test': the test split."""
    arrays, n = (self._validation, self.num_validation) if split == 'validation' else (self._test, self.num_test)
    rows, mask = sampler.eval_rows(n, batch_size)
    return pipeline.eval_batches(arrays, rows, mask, preprocess=self._preprocess, process=process, autotune=False)
