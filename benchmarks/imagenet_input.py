"""ImageNet input pipeline throughput per CPU core: JPEG decode + the AlexNet paper's training augmentation.

  python benchmarks/imagenet_input.py [--images=256] [--repeats=5]

Times data/imagenet.py's host transforms in tf.data restricted to one thread, on synthetic JPEGs of ImageNet's
typical size (500x375, quality 90; ImageNet's average is about 400x350):
  host augmentation (data.augment_on='host'): decode, shorter side to 256, central 256x256 crop, mean
    subtraction, random 224x224 crop, flip, PCA colour shift;
  device augmentation's host part (data.augment_on='device', the default): decode, resize, central crop, round
    to uint8; the rest runs in the jitted step (not timed here).
The peer, in the same run and also on one core: the host augmentation with Pillow and numpy, as a hand-written
PyTorch-style loader would do it. Reported: images/s per core, medians of --repeats passes. The last line is one
JSON object.
"""
import argparse
import io
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tf_host

tf_host.quiet()

import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from data import imagenet  # noqa: E402
from data import pipeline  # noqa: E402


def synthetic_jpegs(n, seed=0):
  t = pipeline.tf()
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    smooth = rng.normal(128, 40, (375 // 25 + 1, 500 // 25 + 1, 3)).repeat(25, 0).repeat(25, 1)[:375, :500]
    pixels = np.clip(smooth + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
    out.append(t.io.encode_jpeg(pixels, quality=90).numpy())
  return out


def tf_images_per_s(jpegs, repeats, device=False):
  t = pipeline.tf()
  mean = np.full((256, 256, 3), 120.0, np.float32)
  options = t.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  ds = t.data.Dataset.from_tensor_slices(jpegs).enumerate()
  if device:
    ds = ds.map(lambda i, x: imagenet.decode_uint8(x))
  else:
    ds = ds.map(lambda i, x: imagenet.augment(imagenet.decode_resize_crop(x) - mean,
                                              t.stack([t.constant(0, t.int64), i])))
  ds = ds.batch(64).with_options(options)

  def one_pass():
    for _ in ds:
      pass

  one_pass()
  return len(jpegs) / timing.median_seconds(one_pass, repeats)


def pil_images_per_s(jpegs, repeats):
  from PIL import Image  # noqa: PLC0415 (Pillow comes with matplotlib)

  mean = np.full((256, 256, 3), 120.0, np.float32)
  rng = np.random.default_rng(0)

  def one(jpeg):
    img = Image.open(io.BytesIO(jpeg)).convert('RGB')
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    w, h = img.size
    x = np.asarray(img, np.float32)[(h - 256) // 2:(h - 256) // 2 + 256, (w - 256) // 2:(w - 256) // 2 + 256] - mean
    y0, x0 = rng.integers(0, 33, 2)
    x = x[y0:y0 + 224, x0:x0 + 224]
    if rng.random() < 0.5:
      x = x[:, ::-1]
    return x + 255.0 * imagenet.EIGVEC @ (rng.normal(0, 0.1, 3) * imagenet.EIGVAL)

  def one_pass():
    for j in jpegs:
      one(j)

  one_pass()
  return len(jpegs) / timing.median_seconds(one_pass, repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--images', type=int, default=256)
  p.add_argument('--repeats', type=int, default=5)
  args = p.parse_args()
  jpegs = synthetic_jpegs(args.images)
  ours = tf_images_per_s(jpegs, args.repeats)
  print(f'tf.data, host augmentation, 1 thread:       {ours:8.1f} images/s', flush=True)
  device = tf_images_per_s(jpegs, args.repeats, device=True)
  print(f'tf.data, device augmentation\'s host part:  {device:8.1f} images/s', flush=True)
  pil = pil_images_per_s(jpegs, args.repeats)
  print(f'Pillow + numpy, host augmentation, 1 thread: {pil:8.1f} images/s', flush=True)
  print(json.dumps({'images_per_s_per_core': round(ours, 1), 'device_augment_images_per_s_per_core': round(device, 1),
                    'pil_images_per_s_per_core': round(pil, 1), 'x_pil': round(ours / pil, 3),
                    'device_augment_x_pil': round(device / pil, 3), 'jpeg_size': [375, 500], 'images': args.images,
                    'repeats': args.repeats, 'tensorflow': pipeline.tf().__version__,
                    'python': platform.python_version(), 'machine': platform.machine()}))


if __name__ == '__main__':
  main()
