"""The programs compiled at LLVM's -O1 (trainnets/quick_compile.py) compute the same bits as at XLA:CPU's
default level. Their own tests compare them with programs compiled the default way too: the initial parameters of
the lecture's, Glorot's and the all-zero schemes (tests/test_vmap_sweep.py, InitialParams against mlp.init) and
the data sets (tests/test_toy2d.py, train_test_many against train_test); the seeds' keys and the examples' indices
are integer arithmetic."""
import jax
import numpy as np
import pytest

from trainnets import quick_compile
from trainnets.data import toy2d
from trainnets.training import vmap_sweep
from trainnets.training.vmap_sweep import Model


@pytest.fixture
def not_installed():
  quick_compile.uninstall()
  yield
  quick_compile.install()


def test_options_add_the_level_only_where_installed(not_installed):
  assert quick_compile.options() is None
  assert quick_compile.options({'a': 1}) == {'a': 1}
  quick_compile.install()
  assert quick_compile.options() == quick_compile.OPTIONS  # the tests compute on the CPU
  assert quick_compile.options({'a': 1}) == {'a': 1, **quick_compile.OPTIONS}


def test_a_deferred_jit_is_made_at_its_first_call_with_the_options_then(not_installed):
  @quick_compile.jit(static_argnames='n')
  def f(x, n):
    return x * n

  assert f._jitted is None
  quick_compile.install()
  assert float(f(2.0, n=3)) == 6.0 and f.__name__ == 'f'
  assert f._jitted is not None and f.lower(2.0, n=3).as_text()


def test_the_data_program_draws_the_same_bits_at_o1():
  """The five tasks' training and test sets of the default run's sizes, compiled at -O1 and at the default level,
  for several seeds and margins. Control: at -O0 they differ."""
  lowered = toy2d._train_tests.lower(0, 0.05, toy2d.TASKS, 200, 1000)
  o0, o1, o2 = (lowered.compile({'xla_backend_optimization_level': level}) for level in (0, 1, 2))
  for seed, margin in ((0, 0.05), (7, 0.1), (12345, 0.0), (-3, 0.2)):
    for got, want in zip(jax.tree.leaves(o1(seed, margin)), jax.tree.leaves(o2(seed, margin))):
      np.testing.assert_array_equal(got, want)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(o0(0, 0.05)), jax.tree.leaves(o2(0, 0.05))))


def test_the_initial_parameters_are_the_same_bits_at_o1(not_installed):
  """He's scheme with normal offsets (the ablation sweep's; tests/test_vmap_sweep.py checks the lecture's, Glorot's
  and all-zero ones against mlp.init compiled the default way), for nets of every depth and several widths:
  InitialParams compiled at the default level and at -O1."""
  models = [Model('corner', hidden, 'he', seed) for hidden, seed in
            (((), 0), ((3,), 1), ((32,), 2), ((2, 5), 3), ((16, 16, 32), 4))]
  drawn = {}
  for quick in (False, True):
    (quick_compile.install if quick else quick_compile.uninstall)()
    drawn[quick] = vmap_sweep.InitialParams(models, 0.3, 'normal', 0.2)
  for depth in (0, 1, 2, 3):
    group = [m for m in models if m.depth == depth]
    padded = tuple(max(m.hidden[l] for m in group) for l in range(depth))
    for got, want in zip(*(jax.tree.leaves(drawn[quick].of(group, padded)) for quick in (True, False))):
      np.testing.assert_array_equal(got, want)
