"""Losses. Binary losses take scores z_B and labels y_B in {-1, +1}; they return per-example losses.

The hinge loss is written with `where` rather than `max(0, .)` so that its gradient at the kink (y z = 1,
Loss = 0) is exactly zero, matching the lecture's rule "update only when Loss > 0".
"""
import jax
import jax.numpy as jnp


def hinge(z_B, y_B):
  """Loss(yz) = max(0, 1 - yz), the lecture's loss."""
  margin = 1.0 - y_B * z_B
  return jnp.where(margin > 0, margin, 0.0)


def logistic(z_B, y_B):
  """Loss(yz) = log(1 + exp(-yz)), computed stably."""
  return jax.nn.softplus(-y_B * z_B)


def softmax_cross_entropy(logits_BxK, labels_B):
  """-log softmax(logits)[label] for integer labels in [0, K)."""
  logp_BxK = jax.nn.log_softmax(logits_BxK, axis=-1)
  return -jnp.take_along_axis(logp_BxK, labels_B[:, None].astype(jnp.int32), axis=-1)[:, 0]


def dloss_dz(name, z_B, y_B):
  """d Loss / d z for the binary losses, as the hand-written back-propagation uses it."""
  if name == 'hinge':
    return jnp.where(1.0 - y_B * z_B > 0, -y_B, 0.0)
  if name == 'logistic':
    return -y_B * jax.nn.sigmoid(-y_B * z_B)
  raise ValueError(f'no hand-written derivative for loss {name!r}; choose hinge or logistic')


BINARY_LOSSES = {'hinge': hinge, 'logistic': logistic}


def get_binary(name):
  if name not in BINARY_LOSSES:
    raise ValueError(f'unknown loss {name!r}; choose one of {sorted(BINARY_LOSSES)}')
  return BINARY_LOSSES[name]
