"""Behaviour of the vmapped sweep trainer: what the lecture says training does, and what the code promises."""
import re

import jax
import ml_collections
import numpy as np
import optax
import pytest

from trainnets.data import toy2d
from trainnets.training import optim
from trainnets.training import process
from trainnets.training import sharding
from trainnets.training import vmap_sweep
from trainnets.training.vmap_sweep import Model


def cfgs(**train):
  model = ml_collections.ConfigDict(dict(activation='tanh', weight_std=0.1, offset_init='zeros', offset_std=0.1))
  t = dict(loss='hinge', batch_size=1, sampling='uniform', epochs=10, stop_at_zero_loss=True, unroll=1,
           parallel_tasks=False, optimizer='sgd', learning_rate=1.0, lr_schedule='inverse_time', lr_decay_steps=1000,
           momentum=0.0, momentum_form='trace', weight_decay=0.0)
  t.update(train)
  t = ml_collections.ConfigDict(t)
  return model, t, optim.optimizer(t, total_steps=t.epochs * 100 // t.batch_size)


@pytest.fixture(scope='module')
def data():
  return {t: toy2d.train_test(0, t, 100, 100) for t in ('corner', 'stripes')}


def test_zero_init_is_stuck(data):
  """The lecture: with all weights zero, W and V never change; only the output offset V0 moves."""
  model, train, tx = cfgs(epochs=3)
  run = vmap_sweep.train([Model('corner', (4,), 'zeros', s) for s in range(3)], data, model, train, tx)
  for key in ('W', 'W0'):
    assert np.abs(run['params']['layers'][0][key]).max() == 0
  assert np.abs(run['params']['V']).max() == 0
  assert np.abs(run['params']['V0']).max() > 0, 'the offset V0 does receive updates'


@pytest.mark.slow
def test_ten_units_beat_two_on_the_hard_task(data):
  """The lecture: on a harder task 2 hidden units can no longer solve it; more units fit it. Seeded, can fail."""
  model, train, tx = cfgs(epochs=30)
  models = [Model('stripes', (w,), 'lecture', s) for w in (2, 10) for s in range(4)]
  acc = vmap_sweep.train(models, data, model, train, tx)['curves']['train_accuracy'][:, -1]
  two, ten = acc[:4], acc[4:]
  assert two.max() < 0.95, f'2 units should not fit stripes, got {two}'
  assert np.median(ten) > 0.97, f'10 units should fit stripes, got {ten}'
  assert ten.min() > two.max()


def test_same_seed_same_numbers_and_seeds_differ(data):
  model, train, tx = cfgs(epochs=2, stop_at_zero_loss=False)
  models = [Model('corner', (3,), 'lecture', s) for s in (0, 1, 0)]
  run = vmap_sweep.train(models, data, model, train, tx)
  again = vmap_sweep.train(models, data, model, train, tx)
  for a, b in zip(jax.tree.leaves(run['params']), jax.tree.leaves(again['params'])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(run['params']['V'][0], run['params']['V'][2])
  assert not np.allclose(run['params']['V'][0], run['params']['V'][1])


def test_padding_does_not_change_training(data):
  """A 2-unit net trained alone equals the same net padded to 10 units beside a 10-unit net."""
  model, train, tx = cfgs(epochs=3, stop_at_zero_loss=False)
  alone = vmap_sweep.train([Model('corner', (2,), 'lecture', 5)], data, model, train, tx)
  padded = vmap_sweep.train([Model('corner', (2,), 'lecture', 5), Model('corner', (10,), 'lecture', 5)], data,
                            model, train, tx)
  np.testing.assert_allclose(padded['params']['layers'][0]['W'][0, :, :2], alone['params']['layers'][0]['W'][0],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(padded['curves']['train_loss'][0], alone['curves']['train_loss'][0], rtol=1e-5)
  assert np.abs(padded['params']['layers'][0]['W'][0, :, 2:]).max() == 0, 'masked units stay zero'


def test_stopping_at_zero_loss_freezes_a_model(data):
  model, train, tx = cfgs(epochs=40)
  run = vmap_sweep.train([Model('corner', (10,), 'lecture', 0)], data, model, train, tx,
                         snapshot_epochs=(0, 5))
  (stop,) = run['epochs']
  assert stop < 40, 'corner with 10 units reaches zero hinge loss well within 40 epochs'
  curve = run['curves']['train_loss'][0]
  assert curve[stop] == 0 and np.all(curve[stop:] == 0)
  assert curve.shape == (41,)


@pytest.mark.parametrize('batch_size,sampling', [
    pytest.param(10, 'uniform', marks=pytest.mark.slow), (1, 'permutation'),
    pytest.param(20, 'permutation', marks=pytest.mark.slow)])
def test_minibatch_and_permutation_train(data, batch_size, sampling):
  model, train, tx = cfgs(epochs=15, batch_size=batch_size, sampling=sampling, learning_rate=0.5)
  run = vmap_sweep.train([Model('corner', (10,), 'lecture', s) for s in range(2)], data, model, train, tx)
  loss = run['curves']['train_loss']
  assert np.all(loss[:, -1] < 0.5 * loss[:, 0]), f'training loss should fall, got {loss[:, [0, -1]]}'


def test_one_depth_per_call(data):
  model, train, tx = cfgs()
  with pytest.raises(ValueError, match='one depth'):
    vmap_sweep.train([Model('corner', (2,), 'lecture', 0), Model('corner', (2, 2), 'lecture', 0)], data, model,
                     train, tx)


def test_each_model_can_train_on_its_own_draw_of_the_task():
  """data.seed_per_model: a model keyed (task, data seed) trains on that draw; with data seed 0 it computes exactly
  what the shared data set of seed 0 gives, and another data seed gives another run."""
  from trainnets.training import hidden_units  # noqa: PLC0415

  model, train, tx = cfgs(epochs=2)
  own = {('corner', s): toy2d.train_test(s, 'corner', 100, 100) for s in (0, 1)}
  run = vmap_sweep.train([Model('corner', (4,), 'lecture', 0, 0), Model('corner', (4,), 'lecture', 0, 1)], own,
                         model, train, tx)
  shared = vmap_sweep.train([Model('corner', (4,), 'lecture', 0)], {'corner': own[('corner', 0)]}, model, train, tx)
  np.testing.assert_array_equal(run['curves']['train_loss'][0], shared['curves']['train_loss'][0])
  assert not np.array_equal(run['curves']['train_loss'][1], run['curves']['train_loss'][0])
  from experiments import hidden_units as config_lib  # noqa: PLC0415

  c = config_lib.get_config('quick')
  assert {m.data_seed for ms in hidden_units.models_for(c).values() for m in ms} == {None}
  c.data.seed_per_model, c.data.seed = True, 5
  assert {(m.seed, m.data_seed) for ms in hidden_units.models_for(c).values() for m in ms} == {
      (s, 5 + s) for s in range(4)}


def test_seed_keys_are_each_seeds_own_key():
  """Keys computed once per distinct seed, in one padded program, are fold_in(PRNGKey(seed), stream) of each model."""
  models = [Model('corner', (2,), 'lecture', s) for s in [3, 0, 3, *range(100, 170), 2**32 - 1]]
  for stream in (0, 1):
    got = vmap_sweep._seed_keys(models, stream)
    want = np.stack([jax.random.fold_in(jax.random.PRNGKey(np.uint32(m.seed)), stream) for m in models])
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('sampling,epochs_per_draw', [('uniform', 12), ('permutation', 12), ('uniform', 5)])
def test_examples_drawn_apart_are_each_models_own_sequence(sampling, epochs_per_draw, monkeypatch):
  """The examples drawn once per distinct seed, apart from the epoch program, are each model's own: epoch e of seed
  s from fold_in(fold_in(PRNGKey(s), 1), e), as the trainer defines them (a random example each step, or one pass
  over a permutation), for seeds past the 64 one program pads to, and across draws of a few epochs each."""
  monkeypatch.setattr(vmap_sweep, 'EXAMPLES_PER_DRAW', 128 * 20 * 2 * epochs_per_draw)
  models = [Model('corner', (2,), 'lecture', s) for s in [7, 3, 7, *range(100, 166), 0]]
  examples = vmap_sweep.Examples(models, 50, 20, 2, sampling, 12, sharding.model_mesh())
  for epoch in (1, 5, 6, 9, 12):
    drawn, k = examples(epoch)
    assert drawn.shape[1] == epochs_per_draw and k == (epoch - 1) % epochs_per_draw
    drawn = np.asarray(drawn)[:, k]
    assert drawn.shape == (128, 20, 2)
    for m, row in zip(models, examples.rows):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(m.seed), 1), epoch)
      want = (jax.random.randint(key, (20, 2), 0, 50) if sampling == 'uniform' else
              jax.random.permutation(key, 50)[:40].reshape(20, 2))
      np.testing.assert_array_equal(drawn[row], want)


@pytest.mark.parametrize('scheme,offsets', [('lecture', 'zeros'), ('glorot', 'normal'), ('zeros', 'zeros')])
def test_initial_params_drawn_at_once_are_each_models_own(scheme, offsets):
  """One draw at the deepest, widest shape gives every model, of every depth and width, bitwise the parameters
  that mlp.init, compiled for its own padded sizes, gives it (as the sweep drew them, group by group, before it
  drew them all in one program)."""
  from nets import mlp  # noqa: PLC0415

  models = [Model('corner', hidden, scheme, seed) for hidden, seed in
            (((), 0), ((3,), 1), ((7,), 2), ((2, 5), 3), ((4, 4, 9), 4), ((1, 1, 1), 5))]
  drawn = vmap_sweep.InitialParams(models, 0.3, offsets, 0.2)
  for m in models:
    padded = tuple(w + 2 for w in m.hidden)  # padded as a group wider than the model would pad it
    got = drawn.of([m], padded)
    key = jax.random.fold_in(jax.random.PRNGKey(m.seed), 0)
    own = jax.jit(jax.vmap(lambda k, t, padded=padded: mlp.init(k, (2, *padded, 1), weight_init=scheme,
                                                                offset_init=offsets, weight_std=0.3, offset_std=0.2,
                                                                true_sizes=tuple(t))))
    want = jax.tree.map(lambda a: a[0], own(key[None], np.asarray([(2, *m.hidden, 1)], np.int32)))
    assert jax.tree.structure(got) == jax.tree.structure(want), m
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(g[0], np.asarray(w), err_msg=str(m))


def one_epoch_args(num_models, hidden, n):
  """(tx, the arguments of one epoch_fn call) for num_models nets of widths `hidden` on n random points, on one
  device: what a test compiles the epoch program with."""
  models = [Model('corner', hidden, 'lecture', s) for s in range(num_models)]
  tx = optax.sgd(0.1)
  examples = vmap_sweep.Examples(models, n, n, 1, 'uniform', 1, sharding.model_mesh(jax.devices()[:1]))
  params = vmap_sweep.InitialParams(models, 0.1, 'zeros', 0.1).of(models, hidden)
  x = np.random.default_rng(0).normal(size=(num_models, n, 2)).astype(np.float32)
  data = {'x_train': x, 'y_train': np.sign(x[..., 0]), 'masks': None, 'example_row': examples.rows}
  return tx, (params, jax.vmap(tx.init)(params), examples(1), np.ones(num_models, bool), data)


def test_copy_insertion_by_region_stops_copying_the_weights_at_every_step():
  """What the entry points' XLA flag (process.COPY_FLAG) is for: under XLA:CPU's default copy insertion the epoch
  program copies its loop state, the hidden layers' weights among it, at every step; with the region analysis it
  does not, and the trained parameters are the same bits."""
  tx, args = one_epoch_args(4, (8, 8), 30)
  epoch_fn, _ = vmap_sweep.make_epoch_fn(tx, activation='tanh', loss='hinge')
  lowered = epoch_fn.lower(*args)
  state_copies, trained = {}, {}
  for region in (False, True):
    compiled = lowered.compile({process.COPY_FLAG.lstrip('-'): region})
    state_copies[region] = re.findall(r'= (\S+) copy\(%get-tuple-element', compiled.as_text())
    trained[region] = jax.tree.map(np.asarray, compiled(*args)[0])
  assert 'f32[4,8,8]{2,1,0}' in state_copies[False], state_copies
  assert 'f32[4,8,8]{2,1,0}' not in state_copies[True] and len(state_copies[True]) < len(state_copies[False])
  jax.tree.map(np.testing.assert_array_equal, trained[True], trained[False])


def test_epoch_programs_without_parallel_tasks_split_no_loop_and_train_the_same():
  """train.parallel_tasks=False compiles the epoch program without XLA:CPU's parallel task assigner: no loop of it
  is split over threads, where the default compilation splits one, and the trained parameters are the same bits."""
  tx, args = one_epoch_args(64, (16,), 100)
  split, trained = {}, {}
  for parallel in (True, False):
    epoch_fn, _ = vmap_sweep.make_epoch_fn(tx, activation='tanh', loss='hinge', parallel_tasks=parallel)
    compiled = epoch_fn.lower(*args).compile()
    split[parallel] = len(re.findall(r'outer_dimension_partitions":\["', compiled.as_text()))
    trained[parallel] = jax.tree.map(np.asarray, compiled(*args)[0])
  assert split[True] >= 1 and split[False] == 0, split
  jax.tree.map(np.testing.assert_array_equal, trained[False], trained[True])


@pytest.mark.parametrize('layout,snapshots', [('models_first', ()), ('models_last', (0, 2))])
def test_a_group_made_ready_trains_without_compiling_and_the_same(data, layout, snapshots):
  """Group.compile() (the hidden-units trainer calls it in another thread while the group before trains) compiles
  every program the group's training calls, the evaluations of each snapshot's split included, and changes none of
  its results. Control: the same group not made ready compiles while it trains."""
  model, train, _ = cfgs(epochs=3, layout=layout)
  tx = lambda eta0: optim.optimizer(train, total_steps=300, learning_rate=eta0)
  models = [Model(t, (w,), 'lecture', s) for t in ('corner', 'stripes') for w in (3, 10) for s in range(2)]
  compiles = []
  listener = lambda event, seconds, **_: compiles.append(event) if event.endswith('backend_compile_duration') else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  cached = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)  # a program loaded from the disk cache compiles nothing
  out = {}
  try:
    for ready in (True, False):
      group = vmap_sweep.Group(models, data, model, train, tx, snapshot_epochs=snapshots,
                               learning_rates=[0.5] * len(models))
      if ready:
        group.compile()
      compiles.clear()
      out[ready] = group.train()
      assert bool(compiles) != ready, f'{len(compiles)} programs compiled while the group trained'
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
    jax.config.update('jax_enable_compilation_cache', cached)
  jax.tree.map(np.testing.assert_array_equal, out[True], out[False])
