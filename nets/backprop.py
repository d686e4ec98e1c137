"""The lecture's hand-derived SGD updates, written out as the slides give them.

These exist to be read next to the lecture and to check the autodiff path against: `tests/test_backprop.py`
shows that each equals one step of plain SGD with gradients from `jax.grad`. Training uses the autodiff path.

All functions take one example: x_D (inputs), y (a label in {-1, +1}) and a step size eta, and use the hinge
loss Loss(yz) = max(0, 1 - yz): when Loss > 0 the parameters move, otherwise they stay as they are.
"""
import jax.numpy as jnp

from nets import activations
from nets import losses


def single_layer_update(params, x_D, y, eta):
  """z = sum_j x_j V_j + V0. When Loss > 0: V_i <- V_i + eta x_i y, V0 <- V0 + eta y."""
  z = x_D @ params['V'][:, 0] + params['V0'][0]
  active = (1.0 - y * z > 0).astype(x_D.dtype)
  return {
      'layers': [],
      'V': params['V'] + (active * eta * y * x_D)[:, None],
      'V0': params['V0'] + active * eta * y,
  }


def two_layer_update(params, x_D, y, eta, activation='tanh'):
  """One hidden layer: z_j = sum_i x_i W_ij + W0_j, z = sum_j f(z_j) V_j + V0. When Loss > 0:

    V_j  <- V_j  + eta y f(z_j)            V0   <- V0   + eta y
    W_ij <- W_ij + eta x_i f'(z_j) V_j y   W0_j <- W0_j + eta f'(z_j) V_j y

  with f'(z_j) = [[z_j > 0]] for ReLU and 1 - f(z_j)^2 for tanh. Every right-hand side uses the old values.
  """
  (layer,) = params['layers']
  W, W0, V, V0 = layer['W'], layer['W0'], params['V'][:, 0], params['V0'][0]
  zj = x_D @ W + W0
  fz = activations.get(activation)(zj)
  z = fz @ V + V0
  active = (1.0 - y * z > 0).astype(x_D.dtype)
  dfz = activations.derivative(activation, zj, fz)
  step = active * eta * y
  return {
      'layers': [{'W': W + step * jnp.outer(x_D, dfz * V), 'W0': W0 + step * dfz * V}],
      'V': (V + step * fz)[:, None],
      'V0': jnp.reshape(V0 + step, (1,)),
  }


def backprop_grads(params, x_D, y, activation='tanh', loss='hinge'):
  """Gradients of Loss(y z(x)) for a net of any depth, by back-propagation written by hand.

  Forward: keep every layer's pre-activation z_l and output a_l. Backward: the derivative with respect to the
  output, dL/dz, flows back through V and then through each layer as delta_l = (delta_{l+1} W_{l+1}^T) * f'(z_l),
  reusing the next layer's delta: that reuse is what makes back-propagation cheap.
  """
  f = activations.get(activation)
  a_list, z_list = [x_D], []
  for layer in params['layers']:
    z = a_list[-1] @ layer['W'] + layer['W0']
    z_list.append(z)
    a_list.append(f(z))
  out = a_list[-1] @ params['V'] + params['V0']
  g_out = losses.dloss_dz(loss, out, y)  # (K,), dL/dz at the output
  grads = {'V': jnp.outer(a_list[-1], g_out), 'V0': g_out, 'layers': [None] * len(params['layers'])}
  delta_next, w_next = g_out, params['V']
  for l in reversed(range(len(params['layers']))):
    delta = (w_next @ delta_next) * activations.derivative(activation, z_list[l], a_list[l + 1])
    grads['layers'][l] = {'W': jnp.outer(a_list[l], delta), 'W0': delta}
    delta_next, w_next = delta, params['layers'][l]['W']
  return grads


def backprop_update(params, x_D, y, eta, activation='tanh', loss='hinge'):
  """theta <- theta - eta * dLoss/dtheta with hand-written back-propagation, for any depth."""
  g = backprop_grads(params, x_D, y, activation, loss)
  return {
      'layers': [{k: layer[k] - eta * gl[k] for k in layer} for layer, gl in zip(params['layers'], g['layers'])],
      'V': params['V'] - eta * g['V'],
      'V0': params['V0'] - eta * g['V0'],
  }
