"""Test-wide settings, applied before JAX starts.

- The CPU platform, whatever accelerators the machine has and whatever JAX_PLATFORMS said: the suite's device
  counts and bitwise comparisons are the CPU's, and the CLI tests' subprocesses inherit it. GPU-only checks, if
  any, belong in benchmarks/ or are marked and skipped here.
- 8 simulated CPU devices (unless XLA_FLAGS already sets a count), so every test runs the sharded code paths
  that GPUs and TPUs run, and the entry points' other XLA flag (process.xla_flags); the subprocesses inherit it.
- The random generator's hash lowered over flat arrays, and the programs that compute the same bits at LLVM's -O1
  compiled at -O1, as the entry points compile them (process.flat_threefry, process.quick_compile).
- Implicit rank promotion is an error, so a shape bug cannot hide behind broadcasting.
- Compiled programs are cached in a directory of the system's temporary one, not the user's ~/.cache; the
  subprocesses share it (runs of the same shapes load what an earlier test compiled).
"""
import os
import tempfile

from trainnets.training import process

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['XLA_FLAGS'] = process.xla_flags(cores=8)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(),
                                                                f'jax-training-tests-{os.getuid()}'))

import jax

jax.config.update('jax_platforms', 'cpu')  # also where jax was imported before this file (a plugin's entry point)
jax.config.update('jax_numpy_rank_promotion', 'raise')
process.flat_threefry()  # the random generator compiled as the entry points compile it
process.quick_compile()  # the run-once programs compiled at LLVM's -O1, as the entry points compile them


import pytest  # noqa: E402


def pytest_addoption(parser):
  parser.addoption('--require-onednn', action='store_true',
                   help='fail the oneDNN kernel\'s tests where trainnets/kernels/onednn_conv.so is not built '
                        '(CI builds it)')


@pytest.fixture(scope='session')
def fashion_mnist_preparation(tmp_path_factory):
  """(a TFDS data_dir holding fashion_mnist, prepared once per session from the real files where they exist, what
  the preparation left in Python's temporary directory: a fresh one while it ran)."""
  from trainnets.data import fashion_mnist  # noqa: PLC0415
  from trainnets.errors import DataError  # noqa: PLC0415

  try:
    fashion_mnist.find_sources()
  except DataError as e:
    pytest.skip(f'the Fashion-MNIST files are not on this machine ({e}); `make setup` installs them as root')
  data_dir, tmp = str(tmp_path_factory.mktemp('tfds')), str(tmp_path_factory.mktemp('tmp'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, 'tempdir', tmp)
    fashion_mnist.builder(data_dir)
  return data_dir, os.listdir(tmp)


@pytest.fixture(scope='session')
def fashion_mnist_tfds(fashion_mnist_preparation):
  """A TFDS data_dir holding fashion_mnist (fashion_mnist_preparation)."""
  return fashion_mnist_preparation[0]
