"""ImageNet input pipeline throughput per CPU core: from JPEGs on the host to batches for the training step.

  python benchmarks/imagenet_input.py [--images=256] [--repeats=5] [--jpeg_quality=95]

The process is pinned to one core (Linux; tf.data also limited to one thread), on synthetic JPEGs of ImageNet's
typical size (500x375, quality 90; ImageNet's average is about 400x350). Rows, all in this one run:
  tfds: the original JPEGs (what TFDS's records hold): decode, shorter side to 256, central 256x256 crop, as
    uint8 (data.augment_on='device': the rest runs in the jitted step); with host augmentation also mean
    subtraction, random 224x224 crop, flip and PCA colour shift in tf.data (data.augment_on='host');
  prepared: the store (trainnets/data/store.py) written by trainnets/data/imagenet_store.py from the same images, read
    from disk in the training order, decoded and batched: everything the host does with augmentation on the device; with
    host augmentation also the crop, flip and colour shift;
  Pillow + numpy, the peers a hand-written PyTorch-style loader would use: the host augmentation from the
    original JPEGs, and decoding the store's 256x256 JPEGs.
Reported: images/s per core, medians of --repeats passes; the stored JPEGs' size and their mean absolute error
against the 256x256 image they encode (grey levels). The last line is one JSON object.
"""
import argparse
import io
import json
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if hasattr(os, 'sched_setaffinity'):  # before TensorFlow sizes its thread pools
  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from trainnets import tf_host

tf_host.quiet()

import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from trainnets.data import imagenet  # noqa: E402
from trainnets.data import imagenet_store  # noqa: E402
from trainnets.data import pipeline  # noqa: E402
from trainnets.data import sampler  # noqa: E402
from trainnets.data import store as store_lib  # noqa: E402

MEAN = np.full((256, 256, 3), 120.0, np.float32)


def synthetic_jpegs(n, seed=0):
  t = pipeline.tf()
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    smooth = rng.normal(128, 40, (375 // 25 + 1, 500 // 25 + 1, 3)).repeat(25, 0).repeat(25, 1)[:375, :500]
    pixels = np.clip(smooth + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
    out.append(t.io.encode_jpeg(pixels, quality=90).numpy())
  return out


def one_thread(ds):
  options = pipeline.tf().data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def rate(one_pass, n, repeats):
  one_pass()  # warm-up: tracing, the page cache
  return n / timing.median_seconds(one_pass, repeats)


def tfds_rate(jpegs, repeats, host_augment):
  t = pipeline.tf()
  ds = t.data.Dataset.from_tensor_slices(jpegs).enumerate()
  if host_augment:
    ds = ds.map(lambda i, x: imagenet.augment(imagenet_store.decode_resize_crop(x) - MEAN,
                                              t.stack([t.constant(0, t.int64), i])))
  else:
    ds = ds.map(lambda i, x: imagenet_store.decode_uint8(x))
  ds = one_thread(ds.batch(64))
  return rate(lambda: [None for _ in ds], len(jpegs), repeats)


def write_store(jpegs, directory, quality):
  """The store trainnets/data/imagenet_store.py prepares, of these images (one split, 'train'), through its own
  encoder."""
  t = pipeline.tf()
  encoded = list(t.data.Dataset.from_tensor_slices(jpegs).map(lambda j: imagenet_store.encode_256(j, quality))
                 .as_numpy_iterator())
  record = store_lib.write_shard(directory, 'train', 0, encoded, np.zeros(len(encoded), np.int32))
  store = store_lib.finish(directory, {**imagenet_store.PREPROCESSING, 'jpeg_quality': quality},
                           {'train': store_lib.split_entry([record], len(encoded))})
  error = np.mean([np.abs(imagenet_store.decode_256(e).numpy().astype(np.float32)
                          - imagenet_store.decode_uint8(j).numpy()).mean() for e, j in zip(encoded, jpegs)])
  return store, encoded, error


def prepared_rate(store, repeats, host_augment, epochs=8):
  """One pipeline over `epochs` epochs of the store's training order (as training builds one per epoch of ImageNet's
  20,000 batches, so building it is not what is timed), read, decoded and batched by trainnets/data/store.py."""
  t, n = pipeline.tf(), store.num_examples('train')
  if host_augment:
    decode = lambda x, y, i: {'image': imagenet.augment(t.cast(imagenet_store.decode_256(x), t.float32) - MEAN,
                                                        t.stack([t.constant(0, t.int64), i])), 'label': y}
  else:
    decode = lambda x, y, i: {'image': imagenet_store.decode_256(x), 'label': y}
  rows, positions = (np.concatenate(a) for a in zip(*(sampler.train_rows(n, 64, 0, e) for e in range(epochs))))

  def one_pass():
    for _ in store_lib.batches(store, 'train', rows, decode, positions=positions, autotune=False):
      pass

  return rate(one_pass, rows.size, repeats)  # one core: the process's affinity bounds tf.data's threads


def check_rate(store, repeats):
  """The store's image check (Store.verify: sha256 of every shard a process reads, once per process and run)."""
  n = store.num_examples('train')

  def one_pass():
    store._verified.clear()  # timing the first read of every shard
    store.verify('train', np.arange(n))

  return rate(one_pass, n, repeats)


def pil_rate(jpegs, repeats):
  from PIL import Image  # noqa: PLC0415 (Pillow comes with matplotlib)

  rng = np.random.default_rng(0)

  def one(jpeg):
    img = Image.open(io.BytesIO(jpeg)).convert('RGB')
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    w, h = img.size
    x = np.asarray(img, np.float32)[(h - 256) // 2:(h - 256) // 2 + 256, (w - 256) // 2:(w - 256) // 2 + 256] - MEAN
    y0, x0 = rng.integers(0, 33, 2)
    x = x[y0:y0 + 224, x0:x0 + 224]
    if rng.random() < 0.5:
      x = x[:, ::-1]
    return x + 255.0 * imagenet.EIGVEC @ (rng.normal(0, 0.1, 3) * imagenet.EIGVAL)

  return rate(lambda: [one(j) for j in jpegs], len(jpegs), repeats)


def pil_prepared_rate(encoded, repeats):
  from PIL import Image  # noqa: PLC0415

  def one_pass():
    for b in range(0, len(encoded) // 64 * 64, 64):
      np.stack([np.asarray(Image.open(io.BytesIO(e)).convert('RGB')) for e in encoded[b:b + 64]])

  return rate(one_pass, len(encoded) // 64 * 64, repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--images', type=int, default=256)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--jpeg_quality', type=int, default=imagenet_store.PREPROCESSING['jpeg_quality'],
                 help='of the stored JPEGs (the store uses the default; others to compare)')
  args = p.parse_args()
  if not 1 <= args.jpeg_quality <= 100:
    p.error(f'--jpeg_quality={args.jpeg_quality}: pass 1..100')
  if args.images < 64:
    p.error(f'--images={args.images}: pass at least 64 (one batch)')
  jpegs = synthetic_jpegs(args.images)
  rows = {}

  def row(key, label, value):
    rows[key] = round(value, 1)
    print(f'{label:58s} {value:8.1f} images/s', flush=True)

  row('tfds_images_per_s_per_core', 'original JPEGs, decode + resize + crop (tf.data)', tfds_rate(jpegs, args.repeats,
                                                                                                 False))
  row('tfds_host_augment_images_per_s_per_core', 'original JPEGs, with host augmentation (tf.data)',
      tfds_rate(jpegs, args.repeats, True))
  with tempfile.TemporaryDirectory() as d:
    store, encoded, error = write_store(jpegs, d, args.jpeg_quality)
    row('prepared_images_per_s_per_core', 'prepared store, read + decode + batch', prepared_rate(store, args.repeats,
                                                                                                  False))
    row('prepared_host_augment_images_per_s_per_core', 'prepared store, with host augmentation',
        prepared_rate(store, args.repeats, True))
    row('store_check_images_per_s_per_core', 'prepared store, sha256 check of its images (once per run)',
        check_rate(store, args.repeats))
    stored_bytes = np.mean([len(e) for e in encoded])
  row('pillow_images_per_s_per_core', 'Pillow + numpy, original JPEGs, host augmentation', pil_rate(jpegs,
                                                                                                   args.repeats))
  row('pillow_prepared_images_per_s_per_core', 'Pillow + numpy, the store\'s JPEGs, decode + batch',
      pil_prepared_rate(encoded, args.repeats))
  ratios = {'prepared_x_tfds': rows['prepared_images_per_s_per_core'] / rows['tfds_images_per_s_per_core'],
            'prepared_x_tfds_host_augment': rows['prepared_images_per_s_per_core'] /
            rows['tfds_host_augment_images_per_s_per_core'],
            'prepared_x_pillow_prepared': rows['prepared_images_per_s_per_core'] /
            rows['pillow_prepared_images_per_s_per_core'],
            'tfds_host_augment_x_pillow': rows['tfds_host_augment_images_per_s_per_core'] /
            rows['pillow_images_per_s_per_core'],
            'check_x_prepared': rows['store_check_images_per_s_per_core'] / rows['prepared_images_per_s_per_core']}
  print(json.dumps({**rows, **{k: round(v, 3) for k, v in ratios.items()}, 'jpeg_size': [375, 500],
                    'original_jpeg_bytes': round(float(np.mean([len(j) for j in jpegs]))),
                    'stored_jpeg_bytes': round(float(stored_bytes)), 'stored_mean_abs_error': round(float(error), 3),
                    'jpeg_quality': args.jpeg_quality, 'images': args.images,
                    'repeats': args.repeats, 'cores': len(os.sched_getaffinity(0)) if hasattr(
                        os, 'sched_getaffinity') else None, 'tensorflow': pipeline.tf().__version__,
                    'python': platform.python_version(), 'machine': platform.machine(),
                    'processor': platform.processor()}))


if __name__ == '__main__':
  main()
