"""The random generator's hash lowered over flat arrays (trainnets/kernels/threefry.py) computes JAX's bits."""
import hashlib
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from trainnets.kernels import threefry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Threefry-2x32 with 20 rounds: (key, counter) -> output, the known answers of Random123 (Salmon et al. 2011).
KNOWN = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
         ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
         ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0))]


def test_the_hash_gives_threefrys_known_answers():
  key = np.asarray([k for k, _, _ in KNOWN], np.uint32)
  count = np.asarray([c for _, c, _ in KNOWN], np.uint32)
  want = np.asarray([o for _, _, o in KNOWN], np.uint32)
  got = threefry.threefry2x32(jnp.asarray(key[:, 0]), jnp.asarray(key[:, 1]), jnp.asarray(count[:, 0]),
                              jnp.asarray(count[:, 1]))
  np.testing.assert_array_equal(np.stack([np.asarray(g) for g in got], axis=1), want)
  scalar_keys = threefry.threefry2x32(jnp.uint32(0), jnp.uint32(0), jnp.zeros((2, 3), jnp.uint32),
                                      jnp.zeros((2, 3), jnp.uint32))
  assert all(np.all(np.asarray(o) == w) for o, w in zip(scalar_keys, want[0]))


DRAWS = r'''
import hashlib, sys
import jax, jax.numpy as jnp, numpy as np
from trainnets.training import process
print(process.flat_threefry())
key = jax.random.PRNGKey(7)
keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(jnp.arange(64) + 100)
draws = jax.jit(lambda key, keys: [
    jax.random.split(key, 10), jax.random.fold_in(key, 3), jax.random.bits(key, ()), jax.random.bits(key, (0,)),
    jax.random.uniform(key, (64, 10)), jax.random.normal(key, (3, 5, 7)), jax.random.randint(key, (9, 2), 0, 50),
    jax.random.permutation(key, 33), jax.random.bernoulli(key, 0.3, (100,)),
    jax.vmap(lambda k: jax.random.split(k, 5))(keys), jax.vmap(lambda k: jax.random.normal(k, (4, 6)))(keys),
    jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(10)))(keys)])(key, keys)
for d in draws:
  print(d.shape, d.dtype, hashlib.sha256(np.asarray(d).tobytes()).hexdigest())
print('flat' if 'tensor<640xui32>' in jax.jit(lambda k: jax.random.bits(k, (64, 10))).lower(key).as_text() else 'jax')
'''


def draws(flat):
  proc = subprocess.run([sys.executable, '-c', DRAWS], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'FLAT_THREEFRY': '1' if flat else '0'})
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.splitlines()


def test_every_draw_is_the_bits_of_jaxs_own_lowering():
  """split, fold_in, bits, uniform, normal, randint, permutation and bernoulli, of one key and vmapped over keys,
  compiled with the flat hash and with JAX's lowering (another process, FLAT_THREEFRY=0): the same bits."""
  flat, own = draws(True), draws(False)
  assert (flat[0], flat[-1]) == ('True', 'flat'), flat  # installed, and lowered flat
  assert (own[0], own[-1]) == ('False', 'jax'), own
  assert flat[1:-1] == own[1:-1]
  assert len(set(flat[1:-1])) == len(flat) - 2, 'every draw differs from the others'
  assert hashlib.sha256(b'').hexdigest() in flat[4], 'the empty draw is empty'
