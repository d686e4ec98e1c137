"""Weight and offset initialisation schemes, chosen by name in the config.

Each weight scheme draws a (fan_in, fan_out) matrix; the scale depends on the true fan-in/fan-out, which callers
pass explicitly so that padded layers (a width sweep padded to its largest width) keep the scale of their real
width.

  zeros    all zero: the lecture's example of training that is stuck (W and V never move).
  lecture  N(0, 1/d^2) with d the layer's fan-in: the lecture's "zero mean and variance 1/d^2".
  normal   N(0, std^2) with a configured std.
  lecun    N(0, 1/fan_in).
  glorot   N(0, 2/(fan_in + fan_out)).
  he       N(0, 2/fan_in).
"""
import jax
import jax.numpy as jnp

WEIGHT_INITS = ('zeros', 'lecture', 'normal', 'lecun', 'glorot', 'he')
OFFSET_INITS = ('zeros', 'normal')


def weight_std(scheme, fan_in, fan_out, std=None):
  """Standard deviation of scheme `scheme` for a layer with the given fan-in and fan-out."""
  if scheme == 'zeros':
    return 0.0
  if scheme == 'lecture':
    return 1.0 / fan_in
  if scheme == 'normal':
    if std is None:
      raise ValueError("weight init 'normal' needs a std (config key model.weight_std)")
    return std
  if scheme == 'lecun':
    return (1.0 / fan_in) ** 0.5
  if scheme == 'glorot':
    return (2.0 / (fan_in + fan_out)) ** 0.5
  if scheme == 'he':
    return (2.0 / fan_in) ** 0.5
  raise ValueError(f'unknown weight init {scheme!r}; choose one of {WEIGHT_INITS}')


def weights(key, shape, scheme, *, fan_in=None, fan_out=None, std=None, dtype=jnp.float32):
  """A weight matrix of `shape` (fan_in, fan_out); fan_in/fan_out default to the shape's.

  Row i is drawn with fold_in(key, i), and JAX's (partitionable) generator gives a 1-D draw's first n values
  independently of its length, so a padded matrix holds the unpadded one's values in its top-left block: a
  width sweep's results do not depend on how it pads.
  """
  fan_in = shape[0] if fan_in is None else fan_in
  fan_out = shape[-1] if fan_out is None else fan_out
  s = weight_std(scheme, fan_in, fan_out, std)
  if scheme == 'zeros':
    return jnp.zeros(shape, dtype)
  rows = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape[1:], dtype))(jnp.arange(shape[0]))
  return s * rows


def offsets(key, shape, scheme, *, std=0.1, dtype=jnp.float32):
  """An offset (bias) vector: zeros (the lecture's figures) or N(0, std^2)."""
  if scheme == 'zeros':
    return jnp.zeros(shape, dtype)
  if scheme == 'normal':
    return std * jax.random.normal(key, shape, dtype)
  raise ValueError(f'unknown offset init {scheme!r}; choose one of {OFFSET_INITS}')
