"""JAX's random generator compiled faster on the CPU: its threefry2x32 hash on flat arrays.

Every draw of jax.random (a key's split or fold_in, the bits of uniform and normal) hashes counters with
Threefry-2x32, which JAX lowers on the CPU to a loop of 5 steps over arrays of the draw's shape. XLA:CPU compiles
such a loop over a multi-dimensional array slower than over a flat one, much slower for some shapes. `install`
makes the CPU lower the hash over flat arrays: the counters flattened, each key broadcast to them where it is
added, and the result reshaped back. The hash is integer arithmetic, so every draw is the same bits
(tests/test_threefry.py compares them with JAX's own lowering); only compilation is faster (docs/performance.md).
process.prepare_cpu installs it unless FLAT_THREEFRY=0.
"""
from jax import lax
from jax.interpreters import mlir
import jax.numpy as jnp
import numpy as np

_ROTATIONS = (np.array([13, 15, 26, 6], np.uint32), np.array([17, 29, 16, 24], np.uint32))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant


def _rotate_left(v, r):
  return (v << r) | (v >> (np.uint32(32) - r))


def threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 (20 rounds) of counters (x1, x2) under keys (k1, k2), uint32 arrays that broadcast together,
  computed over flat arrays: the values of JAX's threefry2x32."""
  shape = jnp.broadcast_shapes(k1.shape, k2.shape, x1.shape, x2.shape)

  def flat(a):  # a broadcast XLA fuses into its use: the keys are not written out at the counters' size
    return jnp.broadcast_to(a, shape).reshape(-1)

  keys = (k1, k2, k1 ^ k2 ^ _PARITY)

  def five_rounds(i, ab):  # four rounds, then the key injection: Threefry's step i of 5
    a, b = ab
    rotations = lax.select_n(i % 2, *map(jnp.asarray, _ROTATIONS))
    for j in range(4):
      a = a + b
      b = _rotate_left(b, rotations[j]) ^ a
    a = a + flat(lax.select_n((i + 1) % 3, *keys))
    b = b + flat(lax.select_n((i + 2) % 3, *keys)) + (i + 1).astype(np.uint32)
    return a, b

  a, b = lax.fori_loop(0, 5, five_rounds, (flat(x1) + flat(k1), flat(x2) + flat(k2)))
  return a.reshape(shape), b.reshape(shape)


def install():
  """Lowers JAX's threefry2x32 on the CPU with `threefry2x32`; other platforms keep JAX's. Returns whether it
  could: False where this JAX has no public threefry2x32 primitive (jax.extend.random)."""
  try:
    from jax.extend.random import threefry2x32_p  # noqa: PLC0415
  except ImportError:
    return False
  mlir.register_lowering(threefry2x32_p, mlir.lower_fun(threefry2x32, multiple_results=True), platform='cpu')
  return True
