"""The 2-D tasks: shapes, labels, the margin band, and determinism from the seed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import losses
from nets import mlp
from trainnets.data import toy2d


@pytest.mark.parametrize('task', toy2d.TASKS)
def test_task_shapes_labels_and_determinism(task):
  (x, y), (xt, yt) = toy2d.train_test(3, task, 150, 80)
  assert x.shape == (150, 2) and xt.shape == (80, 2) and y.shape == (150,)
  assert set(np.unique(y)) == {-1.0, 1.0}
  assert 0.15 < float((y > 0).mean()) < 0.85
  (x2, y2), _ = toy2d.train_test(3, task, 150, 80)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  (x3, _), _ = toy2d.train_test(4, task, 150, 80)
  assert not np.allclose(x, x3), 'another data seed must give other points'
  assert not np.allclose(x[:80], xt), 'train and test are independent draws'


@pytest.mark.parametrize('task', ['corner', 'stripes', 'circle', 'xor'])
def test_margin_band_is_empty_and_labels_follow_the_pattern(task):
  pattern = jax.random.fold_in(jax.random.PRNGKey(0), toy2d.TASKS.index(task))
  x, y = toy2d.sample(pattern, jax.random.PRNGKey(7), task, 400, 0.05)
  angle = jax.random.uniform(pattern, (), minval=0.0, maxval=2 * np.pi)
  score = np.asarray(toy2d.SCORES[task](toy2d._rotate(x, -angle)))
  assert np.abs(score).min() >= 0.05
  np.testing.assert_array_equal(np.where(score > 0, 1.0, -1.0), y)


def test_unknown_task():
  with pytest.raises(ValueError, match='unknown task'):
    toy2d.train_test(0, 'moons', 10, 10)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_two_tanh_units_can_represent_stripes(seed):
  """Capacity, not training: a 2-unit tanh net built by hand fits stripes with zero hinge loss on the training and
  test points of the default sizes. Along the bands' normal s, a steep unit ~ sign(s) and a shallow unit ~ s
  give f(s) = A (2 s - sign(s)), whose sign changes at s = -1/2, 0 and 1/2: the three boundaries."""
  (x, y), (xt, yt) = toy2d.train_test(seed, 'stripes', 200, 1000)
  a = toy2d.angle(seed, 'stripes')
  normal = np.array([np.cos(a), -np.sin(a)])
  steep, shallow, scale = 200.0, 0.1, 50.0
  params = {'layers': [{'W': jnp.asarray(np.stack([steep * normal, shallow * normal], 1), jnp.float32),
                        'W0': jnp.zeros(2)}],
            'V': jnp.array([[-scale], [2 * scale / shallow]]), 'V0': jnp.zeros(1)}
  for xs, ys in ((x, y), (xt, yt)):
    z = mlp.apply(params, xs, activation='tanh')[:, 0]
    assert float(losses.hinge(z, ys).max()) == 0.0 and float((jnp.sign(z) == ys).mean()) == 1.0
  # the other way round: the same two units with one output weight flipped no longer separate the bands
  params['V'] = params['V'].at[0, 0].set(scale)
  assert float((jnp.sign(mlp.apply(params, x, activation='tanh')[:, 0]) == y).mean()) < 0.9


def test_many_draws_in_one_program_are_bit_for_bit_each_draw_alone():
  """train_test_many draws each set of tasks and sizes in one compiled program; every array must equal what
  train_test gives alone, whatever else is drawn with it (other tasks, seeds, margins, sizes)."""
  draws = [(seed, task, 60, 90, margin) for seed in (0, 5) for task in toy2d.TASKS for margin in (0.05, 0.1)]
  draws += [(1, 'corner', 30, 40, 0.05), (2**31, 'xor', 20, 20, 0.05)]  # another size; a seed past int32
  many = toy2d.train_test_many(draws)
  assert sorted(many, key=repr) == sorted(draws, key=repr)
  for draw in draws:
    for got, want in zip(jax.tree.leaves(many[draw]), jax.tree.leaves(toy2d.train_test(*draw))):
      assert got.dtype == want.dtype
      np.testing.assert_array_equal(got, want, err_msg=repr(draw))
  with pytest.raises(ValueError, match='unknown task'):
    toy2d.train_test_many([(0, 'moons', 10, 10, 0.05)])
