"""Building blocks of convolutional nets, as pure functions on NHWC arrays (batch, height, width, channels).

Each layer with parameters has `<layer>_init(key, ...) -> params` and `<layer>(params, x, ...)`; the rest are
plain functions. The lecture's components:
  conv              tied filter weights over local windows, producing feature maps (stride, padding, groups)
  max_pool, sum_pool, avg_pool
                    spatial pooling over windows that may overlap (stride < window) or not (stride = window)
  feature_group_max pooling across feature groups: the max over each group of adjacent channels ("maxout")
  lrn               contrast normalisation across feature maps (local response normalisation)
  dropout           the regulariser AlexNet used on its fully connected layers
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from nets import init as init_lib
from nets import onednn


def conv_init(key, kernel, in_channels, out_channels, *, groups=1, weight_init='he', std=None, bias=0.0):
  """{'W': (kh, kw, in/groups, out), 'b': (out,)}; fan-in is kh * kw * in / groups."""
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  if in_channels % groups or out_channels % groups:
    raise ValueError(f'groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}')
  fan_in = kh * kw * in_channels // groups
  w = init_lib.weights(key, (fan_in, out_channels), weight_init, fan_in=fan_in, fan_out=out_channels, std=std)
  return {'W': w.reshape(kh, kw, in_channels // groups, out_channels),
          'b': jnp.full((out_channels,), bias, jnp.float32)}


# On the CPU, convolutions run faster on slices of the batch than on the whole of it, and independent slices keep
# both cores busy. XLA's own convolutions (YNNPACK), for the Fashion-MNIST CNN's 5x5, 32->64 convolution on 14x14
# maps, batch 128, 2 cores, jax 0.10.2: the weight gradient takes 46 ms in one piece and 16 ms as 16 slices of 8
# images; the forward pass 15 ms in one piece and 12 ms as 4 slices of 32; the input gradient 16 ms however it is
# cut. In the whole training step, the input gradient in 8 slices of 16 makes the step 7% faster than in 4 of 32
# (XLA then overlaps it with other work); other sizes were slower. That is for jax 0.10, whose XLA runs each of
# these convolutions on one thread. From jax 0.11 on, YNNPACK spreads each over all cores: the forward pass and the
# input gradient are then fastest whole (8 ms each, 311-322 GFLOP/s), the weight gradient still in slices (24-28
# ms whole, 10-12 ms as 8 slices of 16), and the whole step is 4% faster that way than with jax 0.10's slices (jax
# 0.11.2: 48.8 against 51.0 ms, 0.12.0.1: 49.3 against 51.2 ms). oneDNN's convolutions (nets/onednn.py) run on
# one thread each, with any jax, and are fastest in jax 0.10's slices (the step 11% faster than with XLA's; with
# slices of 32, 64 or the whole batch on 2 threads, no faster than XLA's). Images per slice, for each (None: the
# whole batch):
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


def conv(params, x_BxHxWxC, *, stride=1, padding='SAME', groups=1, space_to_depth=False):
  """2-D convolution plus bias. padding: 'SAME', 'VALID' or an int (pixels on every side).

  The arithmetic is XLA's convolution. On the CPU it runs on slices of the batch, which is faster there, and,
  for float32 without feature groups, by oneDNN where nets/onednn_conv.so is built (`make`; CPU_CONV=xla keeps
  XLA's): tests check both against XLA's plain convolution. (Thin inputs such as conv1 on grey images used to go
  through explicit patches and one matrix product, "im2col", which had measured faster for that layer alone; in
  the whole Fashion-MNIST step the sliced convolution is about 10% faster on 2 cores with jax 0.10.2, so im2col is
  gone.)

  space_to_depth=True computes the same strided convolution (groups=1) as a stride-1 convolution over blocks of
  stride x stride pixels stacked as channels, the kernel zero-padded to a multiple of the stride and rearranged
  to match: for a wide-stride layer on few channels (AlexNet's conv1, 11x11 stride 4 on 3 channels) the GPU's
  matrix units get 48 input channels instead of 3, at (12/11)^2 the multiply-adds.
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  w, out_hw = params['W'].astype(x_BxHxWxC.dtype), None
  if space_to_depth and stride > 1:
    if groups != 1:
      raise ValueError('space_to_depth needs groups=1')
    x_BxHxWxC, w, out_hw = _space_to_depth(x_BxHxWxC, w, stride, padding)
    stride, padding = 1, 'VALID'
  if jax.default_backend() == 'cpu':
    impl = 'onednn' if onednn.supports(x_BxHxWxC, w, groups) and onednn.library() == 'onednn' else 'xla'
    y = _sliced_conv(x_BxHxWxC, w, stride, padding, groups, impl)
  else:
    y = _xla_conv(x_BxHxWxC, w, stride, padding, groups)
  if out_hw and y.shape[1:3] != out_hw:
    y = y[:, :out_hw[0], :out_hw[1]]
  return y + params['b'].astype(y.dtype)[None, None, None, :]


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


def dense_init(key, in_features, out_features, *, weight_init='he', std=None, bias=0.0):
  return {'W': init_lib.weights(key, (in_features, out_features), weight_init, std=std),
          'b': jnp.full((out_features,), bias, jnp.float32)}


def dense(params, x_BxD):
  return x_BxD @ params['W'].astype(x_BxD.dtype) + params['b'].astype(x_BxD.dtype)[None, :]


def _pool(x, init, op, window, stride, padding):
  return lax.reduce_window(x, init, op, (1, window, window, 1), (1, stride, stride, 1), padding)


def max_pool(x_BxHxWxC, window, stride=None, padding='VALID'):
  """Max over window x window regions every `stride` pixels (stride < window: overlapping, AlexNet's 3/2).
  padding: 'VALID' or 'SAME'.

  Values and gradients are reduce_window's (each window's gradient goes to its first maximum), computed faster:
  disjoint windows that tile the image exactly as a reshape (`_tiled_max`), all others as strided slices
  (`_strided_max`).
  """
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
  runs select-and-scatter slowly: with JAX's gradient here, the Fashion-MNIST CNN's training step takes 87 ms
  instead of 57 (batch 128, 2 cores, jax 0.10.2).
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
  return _pool(x, -jnp.inf, lax.max, k, s, 'VALID')


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

  Computed in float32. Its gradient (a custom VJP, tested against JAX's derivative of the formula) keeps only the
  input and recomputes the denominator, in two elementwise passes.
  """
  return _lrn(x_BxHxWxC, n // 2, k, alpha / n if alpha_over_n else alpha, beta)


def _channel_window_sum(v, half):
  return lax.reduce_window(v, 0.0, lax.add, (1, 1, 1, 2 * half + 1), (1, 1, 1, 1),
                           ((0, 0), (0, 0), (0, 0), (half, half)))


def _lrn_denominator(x, half, k, alpha):
  return k + alpha * _channel_window_sum(jnp.square(x.astype(jnp.float32)), half)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, half, k, alpha, beta):
  return x / jnp.power(_lrn_denominator(x, half, k, alpha), beta).astype(x.dtype)


def _lrn_fwd(x, half, k, alpha, beta):
  return _lrn(x, half, k, alpha, beta), x


def _lrn_bwd(half, k, alpha, beta, x, g):
  # b_c = a_c d_c^-beta with d = k + alpha S(a^2), S the symmetric window sum, so
  # da_c = g_c d_c^-beta - 2 alpha beta a_c S(g a d^(-beta-1))_c.
  a, g = x.astype(jnp.float32), g.astype(jnp.float32)
  d = _lrn_denominator(x, half, k, alpha)
  scaled = jnp.power(d, -beta)
  back = _channel_window_sum(g * a * scaled / d, half)
  return ((g * scaled - 2 * alpha * beta * a * back).astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def dropout(x, rate, *, key=None, train=False):
  """Inverted dropout: in training, zero each unit with probability `rate` and scale the rest by 1/(1-rate)."""
  if not train or rate == 0.0:
    return x
  if key is None:
    raise ValueError('dropout in training needs a PRNG key')
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
