"""lrn with a hand-written gradient: the same values and gradient as nets.layers.lrn (tests/test_kernels.py); the
gradient keeps only the input and recomputes the denominator, in two elementwise passes, where JAX's derivative
of the formula keeps several intermediate maps. A custom VJP: jax.grad only, not forward mode.
"""
import functools

import jax
import jax.numpy as jnp

from nets import layers


def lrn(x_BxHxWxC, *, n=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
  """nets.layers.lrn's function."""
  return _lrn(x_BxHxWxC, n // 2, k, alpha / n if alpha_over_n else alpha, beta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, half, k, alpha, beta):
  return x / jnp.power(layers.lrn_denominator(x, half, k, alpha), beta).astype(x.dtype)


def _lrn_fwd(x, half, k, alpha, beta):
  return _lrn(x, half, k, alpha, beta), x


def _lrn_bwd(half, k, alpha, beta, x, g):
  # b_c = a_c d_c^-beta with d = k + alpha S(a^2), S the symmetric window sum, so
  # da_c = g_c d_c^-beta - 2 alpha beta a_c S(g a d^(-beta-1))_c.
  a, g = x.astype(jnp.float32), g.astype(jnp.float32)
  d = layers.lrn_denominator(x, half, k, alpha)
  scaled = jnp.power(d, -beta)
  back = layers.channel_window_sum(g * a * scaled / d, half)
  return ((g * scaled - 2 * alpha * beta * a * back).astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)
