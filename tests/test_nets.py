"""Shapes, names and values of the pure-function nets, losses and initialisers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import activations
from nets import init as init_lib
from nets import losses
from nets import mlp

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize('hidden', [(), (3,), (4, 5), (2, 3, 4)])
def test_mlp_shapes_and_names(hidden):
  sizes = (2, *hidden, 1)
  params = mlp.init(KEY, sizes)
  assert set(params) == {'layers', 'V', 'V0'}
  assert [set(l) for l in params['layers']] == [{'W', 'W0'}] * len(hidden)
  for l, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1])):
    assert params['layers'][l]['W'].shape == (a, b) and params['layers'][l]['W0'].shape == (b,)
  assert params['V'].shape == (sizes[-2], 1) and params['V0'].shape == (1,)
  assert mlp.apply(params, jnp.ones((7, 2))).shape == (7, 1)
  assert mlp.num_params(sizes) == sum(x.size for x in jax.tree.leaves(params))
  assert mlp.structure(len(hidden)) == jax.tree.structure(params)
  assert mlp.structure(len(hidden)) != jax.tree.structure(mlp.init(KEY, (2, *hidden, 5, 1)))


def test_single_layer_net_is_linear():
  params = mlp.init(KEY, (2, 1))
  x = jax.random.normal(KEY, (5, 2))
  np.testing.assert_allclose(mlp.apply(params, x), x @ params['V'] + params['V0'][None, :], rtol=1e-6)


def test_two_layer_net_matches_the_lecture_formula():
  params = mlp.init(KEY, (3, 4, 1), offset_init='normal')
  x = jax.random.normal(jax.random.PRNGKey(1), (3,))
  (layer,) = params['layers']
  zj = [sum(x[i] * layer['W'][i, j] for i in range(3)) + layer['W0'][j] for j in range(4)]
  z = sum(np.tanh(zj[j]) * params['V'][j, 0] for j in range(4)) + params['V0'][0]
  np.testing.assert_allclose(mlp.apply(params, x[None], activation='tanh')[0, 0], z, rtol=1e-5)


def test_masked_padded_net_computes_the_narrow_net():
  narrow = mlp.init(KEY, (2, 3, 3, 1), offset_init='normal')
  padded = mlp.init(KEY, (2, 8, 8, 1), offset_init='normal', true_sizes=(2, 3, 3, 1))
  for a, b in zip(jax.tree.leaves(narrow), jax.tree.leaves(padded)):  # same values in the top-left block
    np.testing.assert_array_equal(a, b[tuple(slice(0, n) for n in a.shape)])
  x = jax.random.normal(KEY, (6, 2))
  masks = mlp.unit_masks_for((3, 3), (8, 8))
  np.testing.assert_allclose(mlp.apply(padded, x, unit_masks=masks), mlp.apply(narrow, x), rtol=1e-6)


@pytest.mark.parametrize('scheme,expected_std', [('lecture', 1 / 50), ('lecun', 50 ** -0.5),
                                                  ('glorot', (2 / 250) ** 0.5), ('he', (2 / 50) ** 0.5),
                                                  ('normal', 0.3)])
def test_weight_init_scales(scheme, expected_std):
  w = init_lib.weights(KEY, (50, 200), scheme, std=0.3)
  assert abs(float(w.mean())) < 0.1 * expected_std
  assert abs(float(w.std()) / expected_std - 1) < 0.05, f'{scheme}: std {float(w.std())} vs {expected_std}'


def test_zero_init_and_unknown_scheme():
  params = mlp.init(KEY, (2, 5, 1), weight_init='zeros')
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(params))
  with pytest.raises(ValueError, match='unknown weight init'):
    mlp.init(KEY, (2, 5, 1), weight_init='orthogonal')


def test_losses_values():
  z, y = jnp.array([2.0, 0.5, -1.0, 1.0]), jnp.array([1.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(losses.hinge(z, y), [0.0, 0.5, 2.0, 0.0])
  np.testing.assert_allclose(losses.logistic(z, y), np.log1p(np.exp(-np.asarray(z))), rtol=1e-6)
  # The hinge's gradient is 0 at the kink (yz = 1) and -y below it: the lecture's "update only when Loss > 0".
  np.testing.assert_allclose(jax.grad(lambda z: losses.hinge(z, y).sum())(z), [0.0, -1.0, -1.0, 0.0])
  logits = jax.random.normal(KEY, (4, 3))
  labels = jnp.array([0, 2, 1, 2])
  manual = -np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[np.arange(4), labels]
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), manual, rtol=1e-5)


@pytest.mark.parametrize('name', sorted(activations.ACTIVATIONS))
def test_activation_derivatives_match_autodiff(name):
  z = jnp.linspace(-2.0, 2.0, 9) + 0.05  # avoid ReLU's kink at 0
  f = activations.get(name)
  np.testing.assert_allclose(activations.derivative(name, z, f(z)), jax.vmap(jax.grad(f))(z), rtol=1e-5, atol=1e-6)
