"""max_pool with a gradient computed in one elementwise pass: the same values and gradients as nets.layers.max_pool
(each window's gradient to its first maximum in row-major order, as XLA's select-and-scatter and PyTorch give
it; tests/test_kernels.py), faster: disjoint windows that tile the image exactly as a reshape (`_tiled_max`),
all others as strided slices (`_strided_max`). Custom VJPs: jax.grad only, not forward mode.
"""
import functools

import jax
from jax import lax
import jax.numpy as jnp


def max_pool(x_BxHxWxC, window, stride=None, padding='VALID'):
  """nets.layers.max_pool's function (padding 'VALID' or 'SAME')."""
  stride = stride or window
  _, h, w, _ = x_BxHxWxC.shape
  if stride == window and h % window == 0 and w % window == 0:
    return _tiled_max(x_BxHxWxC, window)
  pads = lax.padtype_to_pads((h, w), (window, window), (stride, stride), padding)
  if any(lo or hi for lo, hi in pads):  # -inf never wins a window that holds an image pixel
    x_BxHxWxC = lax.pad(x_BxHxWxC, jnp.array(-jnp.inf, x_BxHxWxC.dtype),
                        ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))
  return _strided_max(x_BxHxWxC, window, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiled_max(x, k):
  """Max over disjoint k x k windows as a reshape and a max.

  Its gradient goes to the first maximum of each window in row-major order, as reduce_window's (XLA's
  select-and-scatter) and PyTorch's do, computed in one elementwise pass. JAX's own gradient of a reshaped max
  splits ties evenly, which costs a count per window and several passes over the input, and XLA's CPU backend
  runs select-and-scatter slowly (docs/fashion_mnist/cnn_cpu_performance.md has the timings).
  """
  b, h, w, c = x.shape
  return x.reshape(b, h // k, k, w // k, k, c).max(axis=(2, 4))


def _tiled_max_fwd(x, k):
  y = _tiled_max(x, k)
  return y, (x, y)


def _tiled_max_bwd(k, res, g):
  x, y = res
  b, h, w, c = x.shape
  windows = x.reshape(b, h // k, k, w // k, k, c)
  taken, rows = jnp.zeros(y.shape, bool), []  # taken: the window's maximum is already met, row-major
  for i in range(k):
    cols = []
    for j in range(k):
      hit = (windows[:, :, i, :, j, :] == y) & ~taken
      taken = taken | hit
      cols.append(jnp.where(hit, g, 0))
    rows.append(jnp.stack(cols, axis=3))
  return (jnp.stack(rows, axis=2).reshape(x.shape),)


_tiled_max.defvjp(_tiled_max_fwd, _tiled_max_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _strided_max(x, k, s):
  """Max over k x k windows every s pixels, no padding (s < k: overlapping windows, AlexNet's 3/2).

  The gradient goes to each window's first maximum in row-major order, as select-and-scatter's (reduce_window's
  own gradient) and PyTorch's, but as k^2 strided comparisons and interior-padded sums in one elementwise pass,
  where XLA's GPU backend computes each window's argmax in the forward pass and scatters. On one H200 (bf16,
  batch 256) the grouped AlexNet with LRN trains at 41.6k img/s instead of 39.5k, torchvision's variant at 64.5k
  instead of 63.0k; on the CPU the two are alike.
  """
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), 'VALID')


def _strided_max_fwd(x, k, s):
  y = _strided_max(x, k, s)
  return y, (x, y)


def _strided_max_bwd(k, s, res, g):
  x, y = res
  b, h, w, c = x.shape
  _, ho, wo, _ = y.shape
  taken, dx = jnp.zeros(y.shape, bool), jnp.zeros(x.shape, g.dtype)
  for i in range(k):
    for j in range(k):  # the pixels at offset (i, j) of every window
      end = (b, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c)
      hit = (lax.slice(x, (0, i, j, 0), end, (1, s, s, 1)) == y) & ~taken
      taken = taken | hit
      dx = dx + lax.pad(jnp.where(hit, g, 0), jnp.array(0, g.dtype),
                        ((0, 0, 0), (i, h - end[1], s - 1), (j, w - end[2], s - 1), (0, 0, 0)))
  return (lax.optimization_barrier(dx),)  # its own pass: fused into an LRN's gradient, XLA would redo it per map


_strided_max.defvjp(_strided_max_fwd, _strided_max_bwd)
