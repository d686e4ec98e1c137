"""CNN building blocks against direct loop implementations of their definitions."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
from nets import cnn
from nets import layers
from trainnets.errors import ConfigError

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
  """lrn's gradient (JAX's derivative of its vectorised form) against the derivative of the loop, float32 and
  bfloat16 inputs."""
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


def test_dropout_scaled_at_test_time_as_the_alexnet_paper():
  """'test_time': kept units unscaled in training, every output times 1-rate at test time; the same expected
  input to the next layer as inverted dropout, at half the scale in training."""
  x = jnp.full((1000, 100), 3.0)
  y = layers.dropout(x, 0.5, key=KEY, train=True, scaling='test_time')
  assert set(np.unique(y)) == {0.0, 3.0}
  np.testing.assert_array_equal(y == 0, layers.dropout(x, 0.5, key=KEY, train=True) == 0), 'the same units dropped'
  np.testing.assert_array_equal(layers.dropout(x, 0.5, train=False, scaling='test_time'), jnp.full_like(x, 1.5))
  assert abs(float(y.mean()) - 1.5) < 0.05


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
  assert nets.num_params(params) == n_params
  x = jnp.zeros((3, 28, 28, 1))
  assert cnn.apply(params, x, arch).shape == (3, 10)
  assert cnn.apply(params, x, arch, train=True, key=KEY).shape == (3, 10)


def test_arch_validation():
  with pytest.raises(ConfigError, match='model.pool'):
    cnn.Arch(pool='median').validate()
  with pytest.raises(ConfigError, match='model.feature_groups=4'):
    cnn.Arch(conv=((30, 5, 1),), feature_groups=4).validate()
  with pytest.raises(ConfigError, match='triples'):
    cnn.Arch(conv=(32, 5, 1)).validate()
  cnn.Arch(conv=((32, 5, 1),)).validate()
