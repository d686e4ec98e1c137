"""The AlexNet paper's training augmentation and test views as JAX functions, for the accelerator.

The host then only reads and decodes: it sends uint8 256x256 images (4x fewer bytes than float32 crops), and
the jitted step subtracts the mean image, takes a random 224x224 crop, flips it with probability 1/2 and adds
the PCA colour shift 255 * eigvec @ (alpha * eigval), alpha ~ N(0, std^2) per image (trainnets/data/imagenet.py
describes the scale convention). trainnets/data/imagenet.py's tf.data functions compute the same on the host; the two
draw from different generators (TF's stateless ops, JAX's keys), so for one seed they give other crops, flips and shifts
with the same distributions: offsets uniform over 0..positions-1 in each direction (data.crop_positions: the
paper's 32, so 32 x 32 x 2 = 2,048 views of an image; 33 is every offset of a 224 crop in 256), a fair flip,
normal alphas.

Randomness: example i of a batch uses fold_in(key, i), key being the step's (trainnets/training/steps.py derives it from
fold_in(rng, step)), so a resumed run augments every example as the uninterrupted run did, on any number of
devices or processes.
"""
import jax
import jax.numpy as jnp

RESIZE, CROP = 256, 224


def _one(image_256, key, mean, eigval, eigvec, std, positions):
  k_y, k_x, k_flip, k_alpha = jax.random.split(key, 4)
  y = jax.random.randint(k_y, (), 0, positions)
  x = jax.random.randint(k_x, (), 0, positions)
  centred = image_256.astype(jnp.float32) - mean
  patch = jax.lax.dynamic_slice(centred, (y, x, 0), (CROP, CROP, 3))
  patch = jnp.where(jax.random.bernoulli(k_flip), patch[:, ::-1], patch)
  alpha = std * jax.random.normal(k_alpha, (3,))
  return patch + (255.0 * (eigvec @ (alpha * eigval)))[None, None, :]


def train_views(images_Bx256x256x3, key, mean, eigval, eigvec, std=0.1, positions=RESIZE - CROP):
  """float32 (B, 224, 224, 3): example i cropped (at one of `positions` offsets each way), flipped and
  colour-shifted with the key fold_in(key, i)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images_Bx256x256x3.shape[0]))
  one = lambda image, k: _one(image, k, mean, eigval, eigvec, std, positions)
  return jax.vmap(one)(images_Bx256x256x3, keys)


def test_views(images_Bx256x256x3, mean, crops):
  """float32 (B, 224, 224, 3), the central crops (crops=1), or (B, 10, 224, 224, 3): the four corners and the
  centre, then their mirror images, in trainnets/data/imagenet.eval_crops's order."""
  centred = images_Bx256x256x3.astype(jnp.float32) - mean[None]
  o, c = RESIZE - CROP, (RESIZE - CROP) // 2
  if crops == 1:
    return centred[:, c:c + CROP, c:c + CROP, :]
  five = jnp.stack([centred[:, y:y + CROP, x:x + CROP, :] for y, x in ((0, 0), (0, o), (o, 0), (o, o), (c, c))], 1)
  return jnp.concatenate([five, five[:, :, :, ::-1]], axis=1)
