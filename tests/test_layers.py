"""CNN building blocks against direct loop implementations of their definitions."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import cnn
from nets import layers

KEY = jax.random.PRNGKey(0)


def lrn_loop(a, n, k, alpha, beta):
  """b[..., c] = a[..., c] / (k + alpha * sum over the n maps around c of a^2) ** beta, one channel at a time in
  jax.numpy: the reference values, and what JAX differentiates for the reference gradient."""
  c = a.shape[-1]
  sums = [sum(a[..., j] ** 2 for j in range(max(0, i - n // 2), min(c - 1, i + n // 2) + 1)) for i in range(c)]
  return jnp.stack([a[..., i] / (k + alpha * sums[i]) ** beta for i in range(c)], axis=-1)


@pytest.mark.parametrize('n,k,alpha,beta', [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.5, 0.5), (4, 0.5, 0.1, 1.0)])
def test_lrn_matches_the_formula(n, k, alpha, beta):
  a = np.asarray(jax.random.normal(KEY, (2, 3, 3, 7))) * 3
  np.testing.assert_allclose(layers.lrn(jnp.asarray(a), n=n, k=k, alpha=alpha, beta=beta),
                             lrn_loop(a, n, k, alpha, beta), rtol=1e-5)
  np.testing.assert_allclose(layers.lrn(jnp.asarray(a), n=n, k=k, alpha=alpha, beta=beta, alpha_over_n=True),
                             lrn_loop(a, n, k, alpha / n, beta), rtol=1e-5)


@pytest.mark.parametrize('n,k,alpha,beta', [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.5, 0.5), (4, 0.5, 0.1, 1.0)])
def test_lrn_gradient_is_the_formulas(n, k, alpha, beta):
  """lrn's hand-written gradient against JAX's derivative of the formula, in float32 and bfloat16 inputs."""
  a = jax.random.normal(KEY, (2, 3, 3, 7)) * 3
  probe = jax.random.normal(jax.random.PRNGKey(1), a.shape)
  g = jax.grad(lambda a: jnp.sum(layers.lrn(a, n=n, k=k, alpha=alpha, beta=beta) * probe))(a)
  g_ref = jax.grad(lambda a: jnp.sum(lrn_loop(a, n, k, alpha, beta) * probe))(a)
  np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
  g16 = jax.grad(lambda a: jnp.sum(layers.lrn(a, n=n, k=k, alpha=alpha, beta=beta).astype(jnp.float32) * probe))(
      a.astype(jnp.bfloat16))
  assert g16.dtype == jnp.bfloat16
  np.testing.assert_allclose(g16.astype(jnp.float32), g_ref, rtol=2e-2, atol=2e-2)


def conv_loop(x, w, b, stride, pad):
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, cout = w.shape
  ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], ho, wo, cout))
  for i, j in itertools.product(range(ho), range(wo)):
    patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
    y[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2])) + b
  return y


@pytest.mark.parametrize('stride,pad', [(1, 0), (2, 1), (3, 2)])
def test_conv_matches_a_direct_loop(stride, pad):
  p = layers.conv_init(KEY, 3, 4, 5)
  p = {**p, 'b': jnp.arange(5.0)}
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 9, 8, 4)))
  np.testing.assert_allclose(layers.conv(p, jnp.asarray(x), stride=stride, padding=pad),
                             conv_loop(x, np.asarray(p['W']), np.asarray(p['b']), stride, pad), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kernel,cin,padding', [(5, 1, 'SAME'), (3, 2, 'VALID'), (4, 3, 'SAME'), (3, 1, 1)])
def test_thin_input_convolutions_equal_xla(kernel, cin, padding):
  p = layers.conv_init(KEY, kernel, cin, 6)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 10, cin))
  pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
  expected = jax.lax.conv_general_dilated(x, p['W'], (1, 1), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(layers.conv(p, x, padding=padding), expected, rtol=1e-5, atol=1e-5)


def _reduce_window_max(x, k, s=None, padding='VALID'):
  s = s or k
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), padding)


@pytest.mark.parametrize('k,ties', [(2, False), (2, True), (3, True)])
def test_max_pool_fast_path_matches_reduce_window(k, ties):
  """Values and gradients equal reduce_window's, whose gradient goes to each window's first maximum; with ties
  (rounded inputs, as in an image's flat background) a gradient that split or copied them would differ."""
  x = jax.random.normal(KEY, (2, 4 * k, 3 * k, 3))
  if ties:
    x = jnp.round(x)
  probe = jnp.arange(72.0).reshape(2, 4, 3, 3)
  np.testing.assert_array_equal(layers.max_pool(x, k, k), _reduce_window_max(x, k))
  g = jax.grad(lambda x: (layers.max_pool(x, k, k) * probe).sum())(x)
  g_ref = jax.grad(lambda x: (_reduce_window_max(x, k) * probe).sum())(x)
  np.testing.assert_array_equal(g, g_ref)
  assert np.count_nonzero(g) == probe.size - 1  # one pixel per window (probe 0 once)


@pytest.mark.parametrize('k,s,padding,hw', [(3, 2, 'VALID', (13, 11)), (3, 2, 'SAME', (14, 14)), (3, 2, 'SAME', (15, 9)),
                                            (3, 1, 'VALID', (7, 8)), (2, 3, 'VALID', (8, 8)), (2, 2, 'SAME', (7, 7))])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_strided_path_matches_reduce_window(k, s, padding, hw, ties):
  """Overlapping, gapped and padded windows: values and gradients equal reduce_window's (first maximum of each
  window), ties included; an input pixel that is the maximum of several windows gets the sum of their gradients."""
  x = jax.random.normal(KEY, (2, *hw, 3))
  if ties:
    x = jnp.round(x)
  ref = lambda x: _reduce_window_max(x, k, s, padding)
  y = layers.max_pool(x, k, s, padding)
  np.testing.assert_array_equal(y, ref(x))
  probe = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)  # integers: sums exact in any order
  g = jax.grad(lambda x: (layers.max_pool(x, k, s, padding) * probe).sum())(x)
  np.testing.assert_array_equal(g, jax.grad(lambda x: (ref(x) * probe).sum())(x))


@pytest.mark.parametrize('groups', [1, 2])
def test_cnn_pools_before_relu_with_the_same_values_and_gradients(groups):
  """cnn.apply applies ReLU after max pooling; the lecture's order (ReLU, then pooling) gives the same logits
  and gradients, ties included (the rounded image has flat regions)."""
  arch = cnn.Arch(conv=((4, 3, 1), (6, 3, 1)), dense=(8,), feature_groups=groups)
  params = cnn.init(KEY, arch, (8, 8, 1))
  x = jnp.round(jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 1)))

  def relu_then_pool(p, x):
    for i in range(len(arch.conv)):
      h = jax.nn.relu(layers.conv(p[f'conv{i + 1}'], x))
      x = layers.max_pool(layers.feature_group_max(h, groups) if groups > 1 else h, 2, 2)
    h = jax.nn.relu(layers.dense(p['fc1'], x.reshape(x.shape[0], -1)))
    return layers.dense(p['out'], h)

  np.testing.assert_allclose(cnn.apply(params, x, arch), relu_then_pool(params, x), rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda p: jnp.sum(f(p) ** 2)
  g = jax.grad(loss(lambda p: cnn.apply(p, x, arch)))(params)
  g_ref = jax.grad(loss(lambda p: relu_then_pool(p, x)))(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_slices_follow_the_library_and_the_jax_version():
  """jax 0.10's XLA runs each CPU convolution on one thread, so all three are sliced; from 0.11 on it uses all
  cores, and only the weight gradient is. oneDNN's run on one thread with any jax (nets/layers.py). None means the
  whole batch; a batch the size does not divide into equal slices stays whole."""
  slices = lambda impl: [layers._slices(128, layers.CPU_SLICE[impl][k]) for k in ('forward', 'input_grad',
                                                                                 'weight_grad')]
  assert slices('xla') == ([4, 8, 16] if jax.__version_info__ < (0, 11) else [1, 1, 8])
  assert slices('onednn') == [4, 8, 16]
  assert layers._slices(128, None) == 1 and layers._slices(6, 16) == 1 and layers._slices(48, 16) == 3


@pytest.mark.parametrize('cpu_conv', ['xla', 'auto'])  # auto: oneDNN's where built (tests/test_onednn.py)
@pytest.mark.parametrize('batch,stride,padding,groups', [(128, 1, 'SAME', 1), (48, 2, 1, 1), (64, 1, 'VALID', 2),
                                                         (6, 1, 'SAME', 1)])
def test_sliced_cpu_convolution_and_its_gradients_equal_xla(batch, stride, padding, groups, cpu_conv, monkeypatch):
  monkeypatch.setenv('CPU_CONV', cpu_conv)
  p = layers.conv_init(KEY, 3, 8, 16, groups=groups)
  x = jax.random.normal(jax.random.PRNGKey(4), (batch, 7, 7, 8))
  pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
  plain = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), pad, feature_group_count=groups,
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = lambda x, w: layers.conv({'W': w, 'b': jnp.zeros(16)}, x, stride=stride, padding=padding, groups=groups)
  np.testing.assert_allclose(ours(x, p['W']), plain(x, p['W']), rtol=1e-5, atol=1e-5)
  probe = jax.random.normal(jax.random.PRNGKey(5), plain(x, p['W']).shape)
  g_ours = jax.grad(lambda x, w: (ours(x, w) * probe).sum(), argnums=(0, 1))(x, p['W'])
  g_plain = jax.grad(lambda x, w: (plain(x, w) * probe).sum(), argnums=(0, 1))(x, p['W'])
  for a, b in zip(g_ours, g_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel,stride,padding,hw,cin', [(11, 4, 2, (35, 37), 3), (5, 2, 'SAME', (13, 11), 2),
                                                        (3, 2, 'VALID', (9, 10), 3), (4, 3, 1, (10, 11), 2)])
def test_space_to_depth_conv_equals_the_strided_conv(kernel, stride, padding, hw, cin):
  """The same outputs and parameter gradients, for kernels the stride divides or not and any padding."""
  p = layers.conv_init(KEY, kernel, cin, 5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, *hw, cin))
  f = lambda p, s2d: layers.conv(p, x, stride=stride, padding=padding, space_to_depth=s2d)
  np.testing.assert_allclose(f(p, True), f(p, False), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p: jnp.sum(jnp.sin(f(p, s2d))))(p) for s2d in (True, False)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)
  with pytest.raises(ValueError, match='groups=1'):
    layers.conv(layers.conv_init(KEY, kernel, 2 * cin, 4, groups=2), jnp.concatenate([x, x], -1), stride=stride,
                padding=padding, groups=2, space_to_depth=True)


def test_grouped_conv_is_two_towers():
  p = layers.conv_init(KEY, 3, 4, 6, groups=2)
  assert p['W'].shape == (3, 3, 2, 6)
  x = jax.random.normal(KEY, (1, 5, 5, 4))
  y = layers.conv(p, x, groups=2)
  left = layers.conv({'W': p['W'][..., :3], 'b': p['b'][:3]}, x[..., :2])
  right = layers.conv({'W': p['W'][..., 3:], 'b': p['b'][3:]}, x[..., 2:])
  np.testing.assert_allclose(y, jnp.concatenate([left, right], -1), rtol=1e-5, atol=1e-6)


def test_pooling_overlapping_and_not():
  x = jnp.arange(1.0, 26.0).reshape(1, 5, 5, 1)
  assert layers.max_pool(x, 2, 2).shape == (1, 2, 2, 1)  # non-overlapping
  np.testing.assert_array_equal(layers.max_pool(x, 3, 2)[0, :, :, 0], [[13, 15], [23, 25]])  # overlapping 3/2
  np.testing.assert_array_equal(layers.sum_pool(x, 2, 2)[0, :, :, 0], [[16, 24], [56, 64]])
  np.testing.assert_array_equal(layers.avg_pool(x, 2, 2)[0, :, :, 0], [[4, 6], [14, 16]])


def test_feature_group_max():
  x = jnp.array([1.0, 5.0, 2.0, 3.0, 9.0, 0.0]).reshape(1, 1, 1, 6)
  np.testing.assert_array_equal(layers.feature_group_max(x, 2)[0, 0, 0], [5, 3, 9])
  np.testing.assert_array_equal(layers.feature_group_max(x, 3)[0, 0, 0], [5, 9])
  with pytest.raises(ValueError):
    layers.feature_group_max(x, 4)


def test_dropout():
  x = jnp.ones((1000, 100))
  assert layers.dropout(x, 0.5, train=False) is x
  y = layers.dropout(x, 0.5, key=KEY, train=True)
  assert abs(float((y == 0).mean()) - 0.5) < 0.01 and set(np.unique(y)) == {0.0, 2.0}
  with pytest.raises(ValueError, match='key'):
    layers.dropout(x, 0.5, train=True)


@pytest.mark.parametrize('arch,n_params', [
    (cnn.Arch(conv=(), dense=(256, 128, 100)), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100 + 1010),
    (cnn.Arch(conv=((32, 5, 1), (64, 5, 1)), dense=(1024,)),
     5 * 5 * 32 + 32 + 5 * 5 * 32 * 64 + 64 + 7 * 7 * 64 * 1024 + 1024 + 10250),
    (cnn.Arch(conv=((32, 5, 1), (64, 5, 1)), dense=(1024,), feature_groups=2, pool='sum', pool_window=3,
              lrn=True),
     5 * 5 * 32 + 32 + 5 * 5 * 16 * 64 + 64 + 6 * 6 * 32 * 1024 + 1024 + 10250),
])
def test_cnn_shapes_and_parameter_counts(arch, n_params):
  params = cnn.init(KEY, arch, (28, 28, 1))
  assert cnn.num_params(params) == n_params
  x = jnp.zeros((3, 28, 28, 1))
  assert cnn.apply(params, x, arch).shape == (3, 10)
  assert cnn.apply(params, x, arch, train=True, key=KEY).shape == (3, 10)


def test_arch_validation():
  assert cnn.Arch(pool='median').validate()
  assert cnn.Arch(conv=((30, 5, 1),), feature_groups=4).validate()
  assert not cnn.Arch(conv=((32, 5, 1),)).validate()
