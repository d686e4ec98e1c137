"""Building blocks of convolutional nets, as pure functions on NHWC arrays (batch, height, width, channels).

Each layer with parameters has `<layer>_init(key, ...) -> params` and `<layer>(params, x, ...)`; the rest are
plain functions. The lecture's components:
  conv              tied filter weights over local windows, producing feature maps (stride, padding, groups)
  max_pool, sum_pool, avg_pool
                    spatial pooling over windows that may overlap (stride < window) or not (stride = window)
  feature_group_max pooling across feature groups: the max over each group of adjacent channels ("maxout")
  lrn               contrast normalisation across feature maps (local response normalisation)
  dropout           the regulariser AlexNet used on its fully connected layers

Every function is plain JAX, the same on every backend, and differentiable in every mode (jax.grad, jax.jvp,
jax.jacfwd, jax.hessian). Faster formulations of conv, max_pool and lrn that compute the same functions live in
trainnets/kernels/; a model takes them as `ops` (an `Ops`), so the model itself never asks which backend it runs on.
"""
import dataclasses
from typing import Callable

import jax
from jax import lax
import jax.numpy as jnp

from nets import init as init_lib


def conv_init(key, kernel, in_channels, out_channels, *, groups=1, weight_init='he', std=None, bias=0.0):
  """{'W': (kh, kw, in/groups, out), 'b': (out,)}; fan-in is kh * kw * in / groups."""
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  if in_channels % groups or out_channels % groups:
    raise ValueError(f'groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}')
  fan_in = kh * kw * in_channels // groups
  w = init_lib.weights(key, (fan_in, out_channels), weight_init, fan_in=fan_in, fan_out=out_channels, std=std)
  return {'W': w.reshape(kh, kw, in_channels // groups, out_channels),
          'b': jnp.full((out_channels,), bias, jnp.float32)}


def conv(params, x_BxHxWxC, *, stride=1, padding='SAME', groups=1):
  """2-D convolution plus bias: XLA's convolution. padding: 'SAME', 'VALID' or an int (pixels on every side);
  groups > 1: each group of in/groups channels feeds its own out/groups maps (AlexNet's two towers)."""
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  w = params['W'].astype(x_BxHxWxC.dtype)
  y = lax.conv_general_dilated(x_BxHxWxC, w, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                               feature_group_count=groups)
  return y + params['b'].astype(y.dtype)[None, None, None, :]


def dense_init(key, in_features, out_features, *, weight_init='he', std=None, bias=0.0):
  return {'W': init_lib.weights(key, (in_features, out_features), weight_init, std=std),
          'b': jnp.full((out_features,), bias, jnp.float32)}


def dense(params, x_BxD):
  return x_BxD @ params['W'].astype(x_BxD.dtype) + params['b'].astype(x_BxD.dtype)[None, :]


def _pool(x, init, op, window, stride, padding):
  return lax.reduce_window(x, init, op, (1, window, window, 1), (1, stride, stride, 1), padding)


def max_pool(x_BxHxWxC, window, stride=None, padding='VALID'):
  """Max over window x window regions every `stride` pixels (stride < window: overlapping, AlexNet's 3/2).
  padding: 'VALID' or 'SAME'. Its gradient goes to each window's first maximum (XLA's select-and-scatter)."""
  return _pool(x_BxHxWxC, -jnp.inf, lax.max, window, stride or window, padding)


def sum_pool(x_BxHxWxC, window, stride=None, padding='VALID'):
  return _pool(x_BxHxWxC, 0.0, lax.add, window, stride or window, padding)


def avg_pool(x_BxHxWxC, window, stride=None, padding='VALID'):
  """Mean over each window (padding 'VALID', so every window holds window^2 pixels)."""
  return sum_pool(x_BxHxWxC, window, stride, padding) / (window * window)


def feature_group_max(x_BxHxWxC, group_size):
  """Max over groups of `group_size` adjacent channels: C channels become C / group_size."""
  *lead, c = x_BxHxWxC.shape
  if c % group_size:
    raise ValueError(f'group_size={group_size} must divide the {c} channels')
  return x_BxHxWxC.reshape(*lead, c // group_size, group_size).max(axis=-1)


def lrn(x_BxHxWxC, *, n=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
  """Local response normalisation across feature maps (Krizhevsky et al. 2012, section 3.3):

    b_c = a_c / (k + alpha' * sum_{c' = max(0, c - n//2)}^{min(C-1, c + n//2)} a_{c'}^2) ** beta

  with alpha' = alpha as the paper writes it, or alpha / n with alpha_over_n=True, as Caffe and PyTorch compute
  it (the same constants then normalise n times more weakly). For odd n (the paper's n = 5) the sum covers n maps;
  for even n the paper's bounds cover n + 1, where PyTorch's window covers n.

  The sum of squares and the power are computed in float32 at least.
  """
  half, alpha = n // 2, alpha / n if alpha_over_n else alpha
  return x_BxHxWxC / jnp.power(lrn_denominator(x_BxHxWxC, half, k, alpha), beta).astype(x_BxHxWxC.dtype)


def channel_window_sum(v, half):
  """The sum over the 2 * half + 1 channels (the last axis) around each channel (fewer at the edges)."""
  rest = v.ndim - 1
  return lax.reduce_window(v, 0.0, lax.add, (1,) * rest + (2 * half + 1,), (1,) * v.ndim,
                           ((0, 0),) * rest + ((half, half),))


def lrn_denominator(x, half, k, alpha):
  """k + alpha * (the window sum of x^2), in float32 at least (bfloat16 inputs would lose the small terms)."""
  return k + alpha * channel_window_sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))), half)


DROPOUT_SCALINGS = ('inverted', 'test_time')


def dropout(x, rate, *, key=None, train=False, scaling='inverted'):
  """In training, zero each unit with probability `rate`. Both scalings keep the expected input of the next layer
  the same in training and at test time: 'inverted' scales the kept units by 1/(1-rate) in training and leaves
  test time alone (today's frameworks); 'test_time' keeps them as they are and multiplies every output by
  1-rate at test time (the AlexNet paper: "multiply their outputs by 0.5")."""
  if rate == 0.0:
    return x
  if not train:
    return x if scaling == 'inverted' else (x * (1.0 - rate)).astype(x.dtype)
  if key is None:
    raise ValueError('dropout in training needs a PRNG key')
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate) if scaling == 'inverted' else x, 0.0).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Ops:
  """The layer functions a model calls where a faster formulation exists: each field has the signature of the
  plain function it defaults to. kernels.resolve builds other Ops from the kernels a config chooses."""
  conv: Callable = conv
  max_pool: Callable = max_pool
  lrn: Callable = lrn


PLAIN = Ops()
