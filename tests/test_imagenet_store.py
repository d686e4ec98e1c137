"""The prepared ImageNet store (trainnets/data/store.py, trainnets/data/imagenet.py): written once from TFDS's records,
resumable, verified, refused when partial or built otherwise, and read 1/P per process in an order that does not depend
on P, without reading what a resumed epoch skips."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import data_cfg
from tests.helpers import ROOT
from tests.helpers import USER_ENV
from trainnets.data import imagenet
from trainnets.data import imagenet_store
from trainnets.data import imagenet_tfds
from trainnets.data import pipeline
from trainnets.data import sampler
from trainnets.data import store as store_lib
from trainnets.errors import DataError

SHARD = 5  # 12 fake images per split: shards of 5, 5 and 2


class Stop(Exception):
  pass


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """TFDS's prepared fake imagenet2012 (12 training and 12 validation images)."""
  tfds_dir = tmp_path_factory.mktemp('tfds')
  manual = imagenet_tfds.write_fake_manual_dir(str(tfds_dir / 'manual'), images=12)
  return imagenet_tfds.builder(str(tfds_dir), manual)


@pytest.fixture(scope='module')
def store(source, tmp_path_factory):
  return imagenet_store.prepare_store(source, str(tmp_path_factory.mktemp('store')), SHARD, log=lambda line: None)


def shard_hashes(directory):
  with open(os.path.join(directory, store_lib.MANIFEST)) as f:
    return [(r['name'], r['jpegs']['sha256'], r['npz']['sha256']) for s in json.load(f)['splits'].values()
            for r in s['shards']]


def test_the_store_holds_every_image_once_in_shards_with_their_checksums(store, source):
  m = store.manifest
  assert [len(m['splits'][s]['shards']) for s in ('train', 'validation')] == [3, 3]
  assert [r['count'] for r in m['splits']['train']['shards']] == [5, 5, 2]
  assert m['preprocessing'] == imagenet_store.PREPROCESSING and m['class_names'][0] == 'n01440764'
  import tensorflow_datasets as tfds  # noqa: PLC0415

  ds = source.as_dataset(split='train', decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False)
  originals = list(ds.as_numpy_iterator())
  encoded, labels = store.read('train', np.arange(12)[::-1])  # across shards, in the order asked
  assert list(labels) == [int(x['label']) for x in originals][::-1]
  want = [imagenet_store.decode_uint8(x['image']).numpy().astype(float) for x in originals[::-1]]
  for i, e in enumerate(encoded):  # each stored image is its original, resized and cropped (JPEG's error on
    stored = imagenet_store.decode_256(e).numpy().astype(float)  # the fake images' pixel noise: ~2 grey levels)
    assert stored.shape == (256, 256, 3) and np.abs(stored - want[i]).mean() < 3.0
    assert np.abs(stored - want[i - 1]).mean() > 10.0


def test_an_interrupted_preparation_is_refused_then_resumes_to_the_same_store(store, source, tmp_path):
  directory = str(tmp_path / 'store')
  lines = []

  def stop_after_two_shards(line):
    lines.append(line)
    if len(lines) == 2:
      raise Stop

  with pytest.raises(Stop):
    imagenet_store.prepare_store(source, directory, SHARD, log=stop_after_two_shards)
  with pytest.raises(DataError) as e:
    store_lib.open_store(directory, imagenet_store.PREPROCESSING, 'python -m trainnets.data.imagenet_store ...')
  assert 'is partial (2 shard(s) written' in str(e.value) and 'python -m trainnets.data.imagenet_store' in str(e.value)
  assert '\n' not in str(e.value)
  first = os.stat(os.path.join(directory, 'train-00000.jpegs')).st_mtime_ns
  lines.clear()
  imagenet_store.prepare_store(source, directory, SHARD, log=lines.append)
  assert [line.split(': ')[0] for line in lines[:-1]] == [
      '[imagenet2012 store] train shard 3/3', '[imagenet2012 store] validation shard 1/3',
      '[imagenet2012 store] validation shard 2/3', '[imagenet2012 store] validation shard 3/3']
  assert os.stat(os.path.join(directory, 'train-00000.jpegs')).st_mtime_ns == first, 'a done shard was rewritten'
  assert shard_hashes(directory) == shard_hashes(store.directory)
  with np.load(os.path.join(directory, imagenet_store.STATISTICS)) as a, \
       np.load(os.path.join(store.directory, imagenet_store.STATISTICS)) as b:
    for k in ('mean', 'eigval', 'eigvec'):
      np.testing.assert_array_equal(a[k], b[k])


def copy_of(store, tmp_path):
  directory = str(tmp_path / 'copy')
  shutil.copytree(store.directory, directory)
  return directory


def test_a_changed_shard_is_refused_in_one_line(store, tmp_path):
  directory = copy_of(store, tmp_path)
  os.truncate(os.path.join(directory, 'validation-00001.jpegs'), 100)
  with pytest.raises(DataError, match=r'changed since it was written \(validation-00001\); remove .* and python -m'):
    store_lib.open_store(directory, imagenet_store.PREPROCESSING, 'python -m trainnets.data.imagenet_store')


def test_a_flipped_byte_fails_the_checksum(store, tmp_path):
  directory = copy_of(store, tmp_path)
  path = os.path.join(directory, 'train-00001.jpegs')
  data = bytearray(open(path, 'rb').read())
  data[1000] ^= 0xFF
  open(path, 'wb').write(bytes(data))
  records = [r for s in store.manifest['splits'].values() for r in s['shards']]
  with pytest.raises(DataError, match=r'1 shard file\(s\) .* differ from their checksums \(train-00001\)'):
    store_lib.verify_shards(directory, records)


def test_a_store_built_with_other_preprocessing_is_refused(store, tmp_path):
  directory = copy_of(store, tmp_path)
  with pytest.raises(DataError, match='was built with other preprocessing') as e:
    store_lib.open_store(directory, {**imagenet_store.PREPROCESSING, 'jpeg_quality': 80},
                         'python -m trainnets.data.imagenet_store')
  assert '\n' not in str(e.value)


class Counting:
  """A store that records which indices were read."""

  def __init__(self, store):
    self.store, self.read_indices, self.directory = store, [], store.directory

  def read(self, split, indices):
    self.read_indices += list(indices)
    return self.store.read(split, indices)

  def verify(self, split, indices):
    self.store.verify(split, indices)


def labels_of(batches):
  return [b['label'] for b in batches]


@pytest.mark.parametrize('processes', [2, 4])
def test_each_process_reads_only_its_share_and_together_they_give_the_one_process_batches(store, processes):
  decode = lambda x, y, i: {'image': imagenet_store.decode_256(x), 'label': y, 'position': i}
  whole = list(store_lib.train_batches(store, 'train', 12, decode, batch_size=4, seed=3, epoch=1))
  assert len(whole) == 3 and sorted(np.concatenate(labels_of(whole))) == sorted(store.read('train', range(12))[1])
  np.testing.assert_array_equal(np.concatenate([b['position'] for b in whole]), np.arange(12))
  parts, reads = [], []
  for p in range(processes):
    counting = Counting(store)
    parts.append(list(store_lib.train_batches(counting, 'train', 12, decode, batch_size=4, seed=3, epoch=1,
                                              process=(p, processes))))
    reads.append(counting.read_indices)
  for b, batch in enumerate(whole):
    for key in ('image', 'label', 'position'):
      np.testing.assert_array_equal(batch[key], np.concatenate([part[b][key] for part in parts]))
  assert sorted(sum(reads, [])) == list(range(12)), 'every image read once, by one process'
  assert all(len(r) == 12 // processes for r in reads)


def test_a_resumed_epoch_reads_nothing_it_skips(store):
  decode = lambda x, y, i: {'image': imagenet_store.decode_256(x), 'label': y}
  whole = list(store_lib.train_batches(store, 'train', 12, decode, batch_size=4, seed=0, epoch=0))
  counting = Counting(store)
  resumed = list(store_lib.train_batches(counting, 'train', 12, decode, batch_size=4, seed=0, epoch=0,
                                         skip_batches=2))
  assert len(resumed) == 1 and len(counting.read_indices) == 4
  np.testing.assert_array_equal(resumed[0]['image'], whole[2]['image'])
  other = list(store_lib.train_batches(store, 'train', 12, decode, batch_size=4, seed=0, epoch=1))
  orders = [sampler.train_rows(12, 4, 0, e)[0].ravel() for e in (0, 1)]
  assert sorted(orders[0]) == list(range(12)) and not np.array_equal(*orders) and len(other) == 3


def test_evaluation_reads_the_split_in_order_padded_and_masked_per_process(store):
  decode = lambda x, y, i: {'label': y}
  whole = list(store_lib.eval_batches(store, 'validation', 10, decode, batch_size=4))
  assert [list(b['mask']) for b in whole] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
  labels = store.read('validation', range(10))[1]
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in whole])[:10], labels)
  parts = [list(store_lib.eval_batches(store, 'validation', 10, decode, batch_size=4, process=(p, 2)))
           for p in range(2)]
  for b, batch in enumerate(whole):
    np.testing.assert_array_equal(batch['mask'], np.concatenate([part[b]['mask'] for part in parts]))


def test_the_dataset_refuses_a_partial_store_and_the_command_finishes_it(tmp_path):
  """train.py's dataset builds a missing store but never a partial one (it may be another job's, half-way):
  one line says to finish it with python -m trainnets.data.imagenet, which resumes it."""
  cfg = data_cfg(tmp_path, fake_images=6, store_dir=str(tmp_path / 'store'))
  imagenet.Dataset(cfg)  # builds TFDS's fake imagenet2012 and the store
  os.remove(tmp_path / 'store' / store_lib.MANIFEST)
  os.remove(tmp_path / 'store' / 'validation-00000.json')
  with pytest.raises(DataError) as e:
    imagenet.Dataset(cfg)
  tfds_dir = tmp_path / 'fake_imagenet2012_6'
  assert str(e.value).endswith(f'finish it with python -m trainnets.data.imagenet_store --tfds_dir={tfds_dir} '
                               f'--store_dir={tmp_path / "store"}'), str(e.value)
  proc = subprocess.run([sys.executable, '-m', 'trainnets.data.imagenet_store', f'--tfds_dir={tfds_dir}',
                         f'--store_dir={tmp_path / "store"}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=USER_ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'validation shard 1/1' in proc.stderr and 'train shard' not in proc.stderr
  assert 'store in' in proc.stdout and 'is complete: 6 training and 6 validation images' in proc.stdout
  assert imagenet.Dataset(cfg).num_train == 6


@pytest.mark.slow
def test_the_input_benchmark_runs_and_reports_every_path():
  proc = subprocess.run([sys.executable, 'benchmarks/imagenet_input.py', '--images=64', '--repeats=1'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=USER_ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for key in ('tfds_images_per_s_per_core', 'prepared_images_per_s_per_core', 'pillow_images_per_s_per_core',
              'prepared_host_augment_images_per_s_per_core', 'pillow_prepared_images_per_s_per_core',
              'store_check_images_per_s_per_core'):
    assert out[key] > 0, key
  assert out['prepared_x_tfds'] == pytest.approx(out['prepared_images_per_s_per_core'] /
                                                 out['tfds_images_per_s_per_core'], rel=1e-2)
  assert out['jpeg_quality'] == imagenet_store.PREPROCESSING['jpeg_quality'] and out['stored_jpeg_bytes'] < out[
      'original_jpeg_bytes']


def test_changed_statistics_are_refused(store, tmp_path):
  directory = copy_of(store, tmp_path)
  with open(os.path.join(directory, imagenet_store.STATISTICS), 'ab') as f:
    f.write(b'more')
  with pytest.raises(DataError, match=f'changed since it was written \\({imagenet_store.STATISTICS}\\)'):
    store_lib.open_store(directory, imagenet_store.PREPROCESSING, 'python -m trainnets.data.imagenet_store')


def test_validation_is_held_out_of_training_stratified_by_class():
  """Each class gives its last examples, in proportion to its size, exactly `count` in all; the rest train."""
  labels = np.array([0] * 6 + [1] * 3 + [2] * 3 + [0] * 4)  # class 0: 10, classes 1 and 2: 3 each
  kept, held = store_lib.held_out(labels, 4)
  assert len(held) == 4 and sorted(np.concatenate([kept, held])) == list(range(16))
  assert list(np.bincount(labels[held], minlength=3)) == [2, 1, 1], 'quotas 2.5, 0.75, 0.75: largest remainders'
  assert set(held) == {14, 15, 8, 11}, "each class's last examples: 0's at 14 and 15, 1's at 8, 2's at 11"
  kept0, held0 = store_lib.held_out(labels, 0)
  assert list(kept0) == list(range(16)) and len(held0) == 0


def test_training_and_evaluation_read_only_the_indices_given(store):
  decode = lambda x, y, i: {'label': y, 'position': i}
  counting = Counting(store)
  kept = np.array([0, 2, 3, 5, 6, 7, 9, 11])
  batches = list(store_lib.train_batches(counting, 'train', kept, decode, batch_size=4, seed=0, epoch=0))
  assert sorted(counting.read_indices) == list(kept) and len(batches) == 2
  counting = Counting(store)
  held = np.array([1, 4, 8, 10, 11])
  out = list(store_lib.eval_batches(counting, 'train', held, decode, batch_size=4))
  assert sum(b['mask'].sum() for b in out) == 5 and sorted(set(counting.read_indices)) == sorted(set(held))


@pytest.mark.parametrize('ext', ['npz', 'jpegs'])
def test_every_byte_is_checked_before_it_is_read(store, tmp_path, ext):
  """A flipped byte in a shard's offsets and labels is refused when the store opens; one in its images before
  the first read from that shard, in one line naming it (no TensorFlow traceback mid-epoch)."""
  directory = copy_of(store, tmp_path)
  path = os.path.join(directory, f'train-00001.{ext}')
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))
  if ext == 'npz':
    with pytest.raises(DataError, match=r'changed since it was written \(train-00001\)'):
      store_lib.open_store(directory, imagenet_store.PREPROCESSING, 'python -m trainnets.data.imagenet_store')
    return
  opened = store_lib.open_store(directory, imagenet_store.PREPROCESSING, 'python -m trainnets.data.imagenet_store')
  decode = lambda x, y, i: {'label': y}
  assert list(store_lib.eval_batches(opened, 'train', np.arange(5), decode, batch_size=5)), 'shard 0 is sound'
  with pytest.raises(DataError, match=r'1 image shard\(s\) of the store in .* differ .* \(train-00001\)'):
    list(store_lib.train_batches(opened, 'train', 12, decode, batch_size=4, seed=0, epoch=0))


def test_no_input_function_is_converted_by_autograph(source, tmp_path):
  """Every function the pipelines hand tf.data is traced as written (pipeline.as_written): AutoGraph would write
  each one it converts to a file in the temporary directory, which a run ending through os._exit (an error, a
  signal, a dead peer) leaves there. Runs the store's preparation and reads, TFDS's verification and the
  in-memory pipelines with augmentation and preprocessing."""
  def generated():
    return {name for name in sys.modules if name.startswith('__autograph_generated_file')}

  before = generated()
  imagenet_tfds._decode_every_image(source, 'redo')
  store = imagenet_store.prepare_store(source, str(tmp_path / 'store'), SHARD, log=lambda line: None)
  decode = lambda x, y, i: {'label': y, 'position': i}
  assert len(list(store_lib.train_batches(store, 'train', np.arange(12), decode, batch_size=4, seed=0, epoch=0)))
  assert len(list(store_lib.eval_batches(store, 'validation', np.arange(12), decode, batch_size=4)))
  arrays = {'image': np.arange(8 * 4, dtype=np.uint8).reshape(8, 2, 2, 1), 'label': np.arange(8)}
  rows, positions = sampler.train_rows(8, 4, seed=0, epoch=0)
  preprocess = lambda x: {'image': x['image'] * 2, 'label': x['label']}
  flip = lambda x, seed: {**x, 'image': pipeline.tf().image.stateless_random_flip_left_right(x['image'], seed)}
  assert len(list(pipeline.train_batches(arrays, rows, positions, epoch_seed=3, preprocess=preprocess,
                                         augment=flip, autotune=False)))
  rows, mask = sampler.eval_rows(8, 4)
  assert len(list(pipeline.eval_batches(arrays, rows, mask, preprocess=preprocess, autotune=False)))
  assert generated() == before
