"""Convolutions computed faster than XLA's plain one where it was measured slower, each the same function as
nets.layers.conv in value and gradient (tests/test_kernels.py):

  sliced_conv     on the CPU, the batch cut into interleaved slices that XLA runs side by side (the sizes per
                  jax version below);
  onednn_conv     the same slices, each convolved by oneDNN through XLA's FFI (trainnets/kernels/onednn.py), for float32
                  convolutions without feature groups; the others as sliced_conv;
  split_groups    a convolution with feature groups as one convolution per group, concatenated;
  space_to_depth  a strided convolution without groups as a stride-1 convolution over blocks of stride x stride
                  pixels stacked as channels (AlexNet's conv1: 48 input channels instead of 3 for the GPU's matrix
                  units, at (12/11)^2 the multiply-adds).

`make_conv(names)` returns a conv(params, x, *, stride, padding, groups) with those kernels; the sliced ones have
hand-written gradients (custom VJPs), so they serve jax.grad but not forward-mode differentiation.
"""
import functools

import jax
from jax import lax
import jax.numpy as jnp

from trainnets.kernels import onednn

# Images per slice (None: the whole batch), per library, as measured fastest for the Fashion-MNIST CNN's whole
# training step on 2 CPU cores (docs/fashion_mnist/cnn_cpu_performance.md). From jax 0.11 on, XLA's CPU
# convolutions (YNNPACK) spread each convolution over all cores, so only their weight gradient still gains from
# slices; oneDNN's run on one thread each and gain from jax 0.10's slices with any jax.
CPU_SLICE = {
    'xla': ({'forward': 32, 'input_grad': 16, 'weight_grad': 8} if jax.__version_info__ < (0, 11) else
            {'forward': None, 'input_grad': None, 'weight_grad': 16}),
    'onednn': {'forward': 32, 'input_grad': 16, 'weight_grad': 8},
}


def _slices(batch, size):
  """How many interleaved slices of about `size` images to cut a batch into (1: do not slice)."""
  if size is None:
    return 1
  n = batch // size
  return n if n > 1 and batch % n == 0 else 1


def _interleaved(a, n):
  """The n interleaved slices of a's batch: slice c holds images c, c + n, c + 2n, ... With the batch sharded
  over devices in contiguous blocks, every slice has an equal part on every device: nothing crosses devices."""
  parts = a.reshape(a.shape[0] // n, n, *a.shape[1:])
  return [parts[:, c] for c in range(n)]


def _uninterleave(slices):
  return jnp.stack(slices, axis=1).reshape(-1, *slices[0].shape[1:])


def _xla_conv(x, w, stride, padding, groups):
  return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  feature_group_count=groups)


def _conv_ops(impl, x_shape, w_shape, stride, padding, groups):
  """(forward(x, w), input_grad(x, w, dy), weight_grad(x, w, dy)) of one convolution, by XLA or by oneDNN."""
  if impl == 'onednn':
    g = onednn.geometry(x_shape, w_shape, stride, padding)
    return (lambda x, w: onednn.forward(x, w, g), lambda x, w, dy: onednn.input_grad(dy, w, g),
            lambda x, w, dy: onednn.weight_grad(x, dy, g))
  forward = lambda x, w: _xla_conv(x, w, stride, padding, groups)
  return (forward, lambda x, w, dy: jax.vjp(lambda x: forward(x, w), x)[1](dy)[0],
          lambda x, w, dy: jax.vjp(lambda w: forward(x, w), w)[1](dy)[0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _sliced_conv(x, w, stride, padding, groups, impl):
  forward, _, _ = _conv_ops(impl, x.shape, w.shape, stride, padding, groups)
  n = _slices(x.shape[0], CPU_SLICE[impl]['forward'])
  return _uninterleave([forward(xs, w) for xs in _interleaved(x, n)])


def _sliced_conv_fwd(x, w, stride, padding, groups, impl):
  return _sliced_conv(x, w, stride, padding, groups, impl), (x, w)


def _sliced_conv_bwd(stride, padding, groups, impl, res, dy):
  x, w = res
  _, input_grad, weight_grad = _conv_ops(impl, x.shape, w.shape, stride, padding, groups)
  n = _slices(x.shape[0], CPU_SLICE[impl]['input_grad'])
  dx = _uninterleave([input_grad(xs, w, dys) for xs, dys in zip(_interleaved(x, n), _interleaved(dy, n))])
  n = _slices(x.shape[0], CPU_SLICE[impl]['weight_grad'])
  dw = sum(weight_grad(xs, w, dys) for xs, dys in zip(_interleaved(x, n), _interleaved(dy, n)))
  return dx, dw


_sliced_conv.defvjp(_sliced_conv_fwd, _sliced_conv_bwd)


def _space_to_depth(x, w, s, padding):
  """(x, w) rearranged so that a stride-1 'VALID' convolution of them, cropped to `out_hw`, equals the stride-s
  convolution of the originals: x's s x s pixel blocks become channels (block row, block column, channel), and
  the kernel, zero-padded to a multiple of s, is cut into the same blocks."""
  kh, kw = w.shape[:2]
  (ph, pw) = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (s, s), padding) if isinstance(padding, str) else padding
  hp, wp = x.shape[1] + sum(ph), x.shape[2] + sum(pw)
  out_hw = ((hp - kh) // s + 1, (wp - kw) // s + 1)
  bh, bw = -(-hp // s), -(-wp // s)  # blocks; the extra pixels meet only zero weights or cropped outputs
  x = jnp.pad(x, ((0, 0), (ph[0], bh * s - hp + ph[1]), (pw[0], bw * s - wp + pw[1]), (0, 0)))
  b, _, _, c = x.shape
  x = x.reshape(b, bh, s, bw, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, bh, bw, s * s * c)
  kbh, kbw = -(-kh // s), -(-kw // s)
  w = jnp.pad(w, ((0, kbh * s - kh), (0, kbw * s - kw), (0, 0), (0, 0)))
  w = w.reshape(kbh, s, kbw, s, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(kbh, kbw, s * s * c, -1)
  return x, w, out_hw


def make_conv(names):
  """conv(params, x, *, stride=1, padding='SAME', groups=1), nets.layers.conv's function, computed with the
  kernels in `names` (a subset of NAMES)."""
  split, s2d = 'split_groups' in names, 'space_to_depth' in names
  onednn_on, sliced = 'onednn_conv' in names, 'sliced_conv' in names or 'onednn_conv' in names

  def one(x, w, stride, padding, groups):
    if not sliced:
      return _xla_conv(x, w, stride, padding, groups)
    impl = 'onednn' if onednn_on and onednn.supports(x, w, groups) else 'xla'
    return _sliced_conv(x, w, stride, padding, groups, impl)

  def conv(params, x_BxHxWxC, *, stride=1, padding='SAME', groups=1):
    if isinstance(padding, int):
      padding = ((padding, padding), (padding, padding))
    x, w, b = x_BxHxWxC, params['W'].astype(x_BxHxWxC.dtype), params['b']
    if groups > 1 and split:
      ys = [one(xg, wg, stride, padding, 1)
            for xg, wg in zip(jnp.split(x, groups, axis=-1), jnp.split(w, groups, axis=-1))]
      y = jnp.concatenate(ys, axis=-1)
    elif s2d and stride > 1 and groups == 1:
      xs, ws, out_hw = _space_to_depth(x, w, stride, padding)
      y = one(xs, ws, 1, 'VALID', 1)
      if y.shape[1:3] != out_hw:
        y = y[:, :out_hw[0], :out_hw[1]]
    else:
      y = one(x, w, stride, padding, groups)
    return y + b.astype(y.dtype)[None, None, None, :]

  return conv


NAMES = ('sliced_conv', 'onednn_conv', 'split_groups', 'space_to_depth')
