"""Hidden-unit non-linearities f(z) and their derivatives f'(z), by name.

The derivatives are the ones the lecture's hand-derived updates use: ReLU's is [[z > 0]] (0 at z = 0, which is
also what `jax.grad` gives), tanh's is 1 - f(z)**2.
"""
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    'relu': jax.nn.relu,
    'tanh': jnp.tanh,
    'sigmoid': jax.nn.sigmoid,
    'identity': lambda z: z,
}


def get(name):
  """Returns the activation function called `name`; raises ValueError naming the choices."""
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


def derivative(name, z, fz):
  """f'(z) for activation `name`, given z and f(z) (so tanh and sigmoid reuse the forward value)."""
  if name == 'relu':
    return (z > 0).astype(z.dtype)
  if name == 'tanh':
    return 1.0 - fz**2
  if name == 'sigmoid':
    return fz * (1.0 - fz)
  if name == 'identity':
    return jnp.ones_like(z)
  raise ValueError(f'unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}')
