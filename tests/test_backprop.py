"""The lecture's hand-derived updates equal one SGD step with gradients from jax.grad.

If one of these fails, either nets/backprop.py no longer follows the lecture's equations or the autodiff path
(nets/mlp.py, nets/losses.py) computes something else than the lecture's net: compare the two on the failing
case by hand before changing either.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import backprop
from nets import losses
from nets import mlp


def autodiff_step(params, x_D, y, eta, activation='tanh', loss='hinge'):
  """One step of plain SGD (optax) on one example, with gradients from jax.grad."""

  def objective(p):
    z = mlp.apply(p, x_D[None], activation=activation)[:, 0]
    return losses.get_binary(loss)(z, jnp.asarray([y])).mean()

  tx = optax.sgd(eta)
  updates, _ = tx.update(jax.grad(objective)(params), tx.init(params), params)
  return optax.apply_updates(params, updates)


def margin(params, x_D, y, activation='tanh'):
  return float(y * mlp.apply(params, x_D[None], activation=activation)[0, 0])


def assert_trees_close(a, b):
  for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def cases(hidden, activation, n=12):
  """Random nets and examples; half of them scaled so that y z > 1 (zero loss: no update)."""
  out = []
  for seed in range(n):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = mlp.init(k1, (3, *hidden, 1), weight_init='lecun', offset_init='normal')
    x = jax.random.normal(k2, (3,))
    y = float(jnp.where(jax.random.bernoulli(k3), 1.0, -1.0))
    if seed % 2:  # flip and scale the output layer until the example is classified with margin > 1
      s = margin(params, x, y, activation)
      scale = np.sign(s) * (2.0 / max(abs(s), 1e-3))
      params = {**params, 'V': params['V'] * scale, 'V0': params['V0'] * scale}
      assert margin(params, x, y, activation) > 1.0
    out.append((params, x, y))
  return out


def test_cases_include_both_regimes():
  ms = [margin(p, x, y) for p, x, y in cases((4,), 'tanh')]
  assert any(m > 1 for m in ms) and any(m < 1 for m in ms)


@pytest.mark.parametrize('case', range(12))
def test_single_layer_update(case):
  params, x, y = cases((), 'tanh')[case]
  new = backprop.single_layer_update(params, x, y, 0.3)
  assert_trees_close(new, autodiff_step(params, x, y, 0.3))
  if margin(params, x, y) > 1:
    assert_trees_close(new, params)


@pytest.mark.parametrize('activation', ['relu', 'tanh'])
def test_two_layer_update(activation):
  for params, x, y in cases((5,), activation):
    new = backprop.two_layer_update(params, x, y, 0.2, activation)
    assert_trees_close(new, autodiff_step(params, x, y, 0.2, activation))
    if margin(params, x, y, activation) > 1:
      assert_trees_close(new, params)
    else:  # Loss > 0: the lecture's update must move V0 by exactly eta * y
      np.testing.assert_allclose(new['V0'] - params['V0'], [0.2 * y], rtol=1e-6)


@pytest.mark.parametrize('hidden', [(), (4,), (3, 5), (4, 3, 2)])
@pytest.mark.parametrize('activation,loss', [('relu', 'hinge'), ('tanh', 'hinge'), ('sigmoid', 'logistic')])
def test_backprop_any_depth(hidden, activation, loss):
  for params, x, y in cases(hidden, activation, n=6):
    assert_trees_close(backprop.backprop_update(params, x, y, 0.1, activation, loss),
                       autodiff_step(params, x, y, 0.1, activation, loss))
