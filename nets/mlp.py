"""Feed-forward nets of any depth and width, as in the lecture.

Parameters are a nested dict with the lecture's names:

  {'layers': [{'W': (d, m1), 'W0': (m1,)}, ..., {'W': (m_{L-1}, m_L), 'W0': (m_L,)}],
   'V': (m_L, K), 'V0': (K,)}

Hidden layer l computes z_l = a_{l-1} W + W0 and a_l = f(z_l); the output is z = a_L V + V0. With no hidden layer
(`hidden=()`) the net is the lecture's single-layer net z = x V + V0, whose decision surface is linear.

`unit_masks` (one 0/1 vector per hidden layer) switches hidden units off. A width sweep pads every net to its
largest width and masks the extra units: a masked unit's output is zero, so it changes nothing downstream and
receives zero gradient, and the padded net computes exactly what the narrow net computes.
"""
import jax
import jax.numpy as jnp
import numpy as np

from nets import activations
from nets import init as init_lib


def init(key, sizes, *, weight_init='lecture', offset_init='zeros', weight_std=None, offset_std=0.1,
         true_sizes=None):
  """Initial parameters of an MLP with layer sizes `sizes` = (d_in, m_1, ..., m_L, K).

  `true_sizes`, if given, are the real widths behind padded `sizes` (ints, or traced integers so that one
  compiled init serves every width of a sweep): weight scales use them, and the padded rows and columns are zero.
  """
  sizes = tuple(int(s) for s in sizes)
  true_sizes = sizes if true_sizes is None else tuple(true_sizes)
  if len(true_sizes) != len(sizes):
    raise ValueError(f'true_sizes {true_sizes} must have one entry per layer size in {sizes}')
  keys = jax.random.split(key, 2 * (len(sizes) - 1))
  mats = []
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    t_in, t_out = true_sizes[i], true_sizes[i + 1]
    w = init_lib.weights(keys[2 * i], (n_in, n_out), weight_init, fan_in=t_in, fan_out=t_out, std=weight_std)
    b = init_lib.offsets(keys[2 * i + 1], (n_out,), offset_init, std=offset_std)
    w = w * ((jnp.arange(n_in) < t_in)[:, None] & (jnp.arange(n_out) < t_out)[None, :])
    b = b * (jnp.arange(n_out) < t_out)
    mats.append((w, b))
  params = {'layers': [{'W': w, 'W0': b} for w, b in mats[:-1]]}
  params['V'], params['V0'] = mats[-1]
  return params


def structure(depth):
  """The tree structure of init's parameters for `depth` hidden layers, known without tracing init: what
  jax.tree.unflatten needs to rebuild saved parameters from their leaves."""
  return jax.tree.structure({'layers': [{'W': 0, 'W0': 0} for _ in range(depth)], 'V': 0, 'V0': 0})


def apply(params, x_BxD, *, activation='tanh', unit_masks=None):
  """Scores z_BxK of the net on inputs x_BxD."""
  f = activations.get(activation)
  a = x_BxD
  for l, layer in enumerate(params['layers']):
    a = f(a @ layer['W'] + layer['W0'][None, :])
    if unit_masks is not None:
      a = a * unit_masks[l][None, :]
  return a @ params['V'] + params['V0'][None, :]


def num_params(sizes):
  """Number of parameters of an MLP with layer sizes (d_in, m_1, ..., K): sum of (fan_in + 1) * fan_out."""
  return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def unit_masks_for(hidden, padded):
  """0/1 masks switching on the first hidden[l] of padded[l] units in each hidden layer: [padded[l]] each, or
  [M, padded[l]] for M models when each hidden[l] is an array of M widths. Built with numpy on the host (widths are
  known before anything is compiled): no program is compiled for them."""
  return [(np.arange(p) < np.asarray(h)[..., None]).astype(np.float32) for h, p in zip(hidden, padded)]
