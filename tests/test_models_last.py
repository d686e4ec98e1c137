"""The models-last layout of the per-example SGD step: the same bits as the vmapped step, where it is used.

Each comparison trains the same nets both ways over whole epochs and compares every output of vmap_sweep.train
(parameters, snapshots, curves, test metrics, stopping epochs) for equality, with a tolerance of zero.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from trainnets.data import toy2d
from trainnets.errors import ConfigError
from trainnets.training import models_last
from trainnets.training import optim
from trainnets.training import vmap_sweep
from trainnets.training.vmap_sweep import Model


def cfgs(**settings):
  model = ml_collections.ConfigDict(dict(activation='tanh', weight_std=0.1, offset_init='zeros', offset_std=0.1))
  t = dict(loss='hinge', batch_size=1, sampling='uniform', epochs=3, stop_at_zero_loss=True, unroll=1,
           parallel_tasks=False, optimizer='sgd', learning_rate=0.5, lr_schedule='inverse_time', lr_decay_steps=1000,
           lr_boundaries=(0.5, 0.75), momentum=0.0, momentum_form='trace', weight_decay=0.0,
           weight_decay_on='weights', layout='models_first')
  for k, v in settings.items():
    (model if k in model else t)[k] = v
  return model, ml_collections.ConfigDict(t)


@pytest.fixture(scope='module')
def data():
  return {t: toy2d.train_test(0, t, 100, 100) for t in ('corner', 'stripes')}


def both_ways(data, depth, widths, init='lecture', seeds=3, **settings):
  """vmap_sweep.train's outputs for the same nets, models first and models last."""
  model, train = cfgs(**settings)
  models = [Model(t, (w,) * depth, init, s) for t in ('corner', 'stripes') for w in widths for s in range(seeds)]
  out = []
  for layout in ('models_first', 'models_last'):
    train.layout = layout
    tx = lambda eta0, train=train: optim.optimizer(train, train.epochs * 100, learning_rate=eta0)
    out.append(vmap_sweep.train(models, data, model, train, tx, snapshot_epochs=(0, 2),
                                learning_rates=[train.learning_rate] * len(models)))
  return out


def assert_identical(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for (path, x), y in zip(leaves_a, leaves_b):
    assert np.array_equal(x, y), f'{jax.tree_util.keystr(path)} differs between the layouts'


@pytest.mark.parametrize('depth,widths', [(0, [1]), (1, [1, 3, 10]), (1, [2, 16, 32]), (2, [4, 10]),
                                          (2, [3, 24, 32]), (3, [6, 10])])
def test_the_default_step_gives_the_same_bits_both_ways(data, depth, widths):
  """The default run's nets: tanh, hinge loss, per-example SGD on the decaying step size; 10 and 32 are its
  paddings, the others other widths (masked units) and a padding of 24."""
  first, last = both_ways(data, depth, widths)
  assert_identical(first, last)
  assert first['curves']['train_loss'][:, -1].mean() < first['curves']['train_loss'][:, 0].mean(), 'it trained'


@pytest.mark.slow
@pytest.mark.parametrize('settings', [
    dict(activation='relu'), dict(activation='sigmoid'), dict(activation='identity', learning_rate=0.05),
    dict(loss='logistic'),
    dict(momentum=0.9, momentum_form='velocity'),
    dict(lr_schedule='constant'), dict(lr_schedule='cosine'), dict(lr_schedule='step'),
    dict(sampling='permutation'), dict(stop_at_zero_loss=False)])
@pytest.mark.parametrize('depth,widths', [(1, [2, 10]), (2, [5, 32])])
def test_every_setting_it_takes_gives_the_same_bits_both_ways(data, settings, depth, widths):
  """Nets that stay finite (the identity nets diverge at the default step size: once values overflow, which NaN or
  infinity comes out depends on more than the order of the sums, and the trainer stops such a run)."""
  first, last = both_ways(data, depth, widths, **settings)
  assert_identical(first, last)


def test_zero_and_normal_initialisation_give_the_same_bits_both_ways(data):
  for init in ('zeros', 'normal'):
    assert_identical(*both_ways(data, 1, [4, 10], init=init, seeds=2))


@pytest.mark.parametrize('settings,fragment', [
    (dict(weight_decay=1e-3), 'without weight decay'), (dict(momentum=0.9), "momentum in the form 'velocity'"),
    (dict(batch_size=4), 'per-example SGD'), (dict(optimizer='adam'), 'trains SGD')])
def test_auto_keeps_models_first_where_the_bits_would_differ_and_models_last_refuses(settings, fragment):
  _, train = cfgs(layout='auto', **settings)
  assert models_last.layout_for(train, (10,)) == 'models_first'
  train.layout = 'models_last'
  with pytest.raises(ConfigError, match=fragment):
    models_last.layout_for(train, (10,))


def test_auto_takes_models_last_for_narrow_nets_only():
  _, train = cfgs(layout='auto')
  assert [models_last.layout_for(train, p) for p in [(), (10,), (32,), (10, 10), (32, 32), (16, 16, 16)]] == [
      'models_first', 'models_last', 'models_first', 'models_last', 'models_first', 'models_last']
  assert models_last.layout_for(train, (9,)) == 'models_first', 'a layer one unit past a multiple of 8'
  train.layout = 'models_first'
  assert models_last.layout_for(train, (10,)) == 'models_first'


@pytest.mark.parametrize('rows,cols', [(10, 10), (32, 32), (10, 32), (32, 10), (8, 10), (10, 8), (17, 17), (24, 24),
                                       (9, 9), (3, 2), (10, 1)])
def test_sums_are_added_in_the_order_of_xla_cpus_matrix_vector_products(rows, cols):
  """The backward product and the forward product against XLA:CPU's own, batched over 16 models. A future XLA that
  orders these sums otherwise fails here first."""
  rng = np.random.default_rng(rows * cols)
  W = rng.normal(0, 1, (16, rows, cols)).astype(np.float32)
  v, a = rng.normal(0, 1, (16, 1, cols)).astype(np.float32), rng.normal(0, 1, (16, 1, rows)).astype(np.float32)
  last = lambda x: jnp.asarray(np.moveaxis(x, 0, -1))
  backward = jax.jit(lambda v, W: jax.lax.dot_general(v, W, (((2,), (2,)), ((0,), (0,)))))(v, W)[:, 0]
  ours = jax.jit(models_last._gemv_rows)(last(W), last(v[:, 0]))
  np.testing.assert_array_equal(np.asarray(ours).T, np.asarray(backward))
  if cols % 8 != 1 and cols != 2:  # the widths the layout refuses
    forward = jax.jit(lambda a, W: jax.lax.dot_general(a, W, (((2,), (1,)), ((0,), (0,)))))(a, W)[:, 0]
    ours = jax.jit(models_last.dense)(last(a[:, 0]), last(W))
    np.testing.assert_array_equal(np.asarray(ours).T, np.asarray(forward))
