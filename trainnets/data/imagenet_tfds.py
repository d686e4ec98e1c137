"""Where ImageNet's images come from: the two archives in the manual directory, prepared by TFDS's imagenet2012
builder and verified once, or tiny fake archives in the same format for tests and the `quick` config.

The manual directory is the config's `data.manual_dir`, else $IMAGENET_MANUAL_DIR, else TFDS's default
<data.tfds_dir>/downloads/manual. Preparing writes ~150 GB of TFRecords into data.tfds_dir, once;
trainnets/data/imagenet_store.py then writes the prepared store from them.

`write_fake_manual_dir` writes archives in the real format (per-class tars of JPEGs inside the train tar, JPEGs
named ILSVRC2012_val_*.JPEG in the val tar), tiny, so tests and the `quick` config run the real builder offline.
"""
import hashlib
import io
import json
import os
import tarfile

import numpy as np

from trainnets import errors
from trainnets import files
from trainnets.data import pipeline
from trainnets.errors import DataError

NAME = 'imagenet2012'
TRAIN_TAR, VAL_TAR = 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'
ENV_VAR = 'IMAGENET_MANUAL_DIR'


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
                    f'(python -m trainnets.data.imagenet) or ${ENV_VAR}')
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
  redo = f'remove {b.data_dir} and prepare it again (python -m trainnets.data.imagenet)'
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
      names = [n.decode() for n in ds.map(pipeline.as_written(lambda x: x['file_name'])).as_numpy_iterator()]
    except t.errors.OpError as e:
      raise DataError(f'the prepared {NAME} split {split} in {b.data_dir} cannot be read ({errors.one_line(e)}); '
                      f'{redo}') from None
    decoded = ds.map(pipeline.as_written(lambda x: (x['file_name'], t.shape(t.io.decode_jpeg(x['image'], channels=3)))),
                     num_parallel_calls=t.data.AUTOTUNE).ignore_errors()
    good = {n.decode() for n, _ in decoded.as_numpy_iterator()}
    bad += [f'{split}/{n}' for n in names if n not in good]
    counts[split] = len(names)
  if bad:
    raise DataError(f'{len(bad)} image(s) of the prepared {NAME} do not decode as JPEG ({", ".join(bad[:3])}'
                    f'{" ..." if len(bad) > 3 else ""}); replace them in the archives, then {redo}')
  return counts


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
