"""The one optimiser builder: weight decay as the AlexNet paper adds it, the schedules, and the plateau rule."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from trainnets.errors import ConfigError
from trainnets.training import optim


def train_cfg(**kw):
  return ml_collections.ConfigDict({'optimizer': 'sgd', 'learning_rate': 0.1, 'lr_schedule': 'plateau',
                                    'momentum': 0.0, 'momentum_form': 'trace', 'weight_decay': 0.0,
                                    'weight_decay_on': 'weights',
                                    'plateau_patience': 2,
                                    'plateau_min_delta': 0.001, 'plateau_factor': 10.0, 'plateau_reductions': 3,
                                    **kw})


def test_plateau_divides_the_step_when_the_error_stops_improving():
  cfg = train_cfg()
  tx = optim.optimizer(cfg, 100)
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  step = lambda s: float(tx.update({'w': jnp.ones(3)}, s, params)[0]['w'][0])
  assert step(state) == pytest.approx(-0.1)
  scales, messages = [], []
  for error in (0.5, 0.4, 0.4, 0.3995, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39, 0.39):
    state, message = optim.plateau_update(state, error, cfg)
    scales.append(step(state) / -0.1)
    messages.append(message)
  # improvements reset the count; 0.3995 is not better than 0.4 by min_delta; at most 3 reductions
  np.testing.assert_allclose(scales, [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-3], rtol=1e-6)
  assert 'reduction 1 of 3' in messages[3] and sum(m is not None for m in messages) == 3


def test_other_schedules_ignore_plateau_updates_and_weight_decay_adds_w():
  cfg = train_cfg(lr_schedule='constant', weight_decay=0.5)
  tx = optim.optimizer(cfg, 100)
  params = {'W': jnp.full(2, 2.0)}
  state = tx.init(params)
  assert optim.plateau_update(state, 0.1, cfg) == (state, None)
  np.testing.assert_allclose(tx.update({'W': jnp.zeros(2)}, state, params)[0]['W'], -0.1 * 0.5 * 2.0)


@pytest.mark.parametrize('which', ['weights', 'all'])
def test_weight_decay_spares_the_biases_unless_asked(which):
  """Kernels and weight matrices (W, V) decay; biases and offsets (b, W0, V0) only with weight_decay_on='all'."""
  params = {'conv1': {'W': jnp.ones(2), 'b': jnp.ones(2)}, 'layers': [{'W': jnp.ones(3), 'W0': jnp.ones(3)}],
            'V': jnp.ones(1), 'V0': jnp.ones(1)}
  tx = optim.optimizer(train_cfg(lr_schedule='constant', weight_decay=0.5, weight_decay_on=which), 10)
  updates = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)[0]
  decayed = {'W', 'V'} if which == 'weights' else {'W', 'V', 'b', 'W0', 'V0'}
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    expected = -0.1 * 0.5 if path[-1].key in decayed else 0.0
    np.testing.assert_allclose(u, expected, err_msg=jax.tree_util.keystr(path))
  with pytest.raises(ConfigError, match="weight_decay_on 'some'"):
    optim.optimizer(train_cfg(weight_decay=0.5, weight_decay_on='some'), 10)
  with pytest.raises(ConfigError, match='plateau'):
    optim.optimizer(train_cfg(lr_schedule='sometimes'), 100)
  with pytest.raises(ConfigError, match='unknown here; choose one of constant, cosine$'):
    optim.optimizer(train_cfg(lr_schedule='plateau'), 100, schedules=('constant', 'cosine'))


@pytest.mark.parametrize('total_steps', [100, 400])
def test_each_schedule_means_one_thing_whichever_trainer_builds_it(total_steps):
  """cosine reaches 0 at the run's last step, step divides by 10 at fractions of the run, inverse_time halves the
  rate after lr_decay_steps whatever the run's length."""
  rate = lambda **kw: optim.schedule(train_cfg(lr_decay_steps=50, lr_boundaries=(0.5,), **kw), total_steps)
  cosine, step, inverse = rate(lr_schedule='cosine'), rate(lr_schedule='step'), rate(lr_schedule='inverse_time')
  assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(total_steps)) == pytest.approx(0.0, abs=1e-9)
  assert float(cosine(total_steps // 2)) == pytest.approx(0.05, rel=1e-5)
  assert float(step(total_steps // 2 - 1)) == pytest.approx(0.1)
  assert float(step(total_steps // 2)) == pytest.approx(0.01)
  assert float(inverse(50)) == pytest.approx(0.05)
  with pytest.raises(ConfigError, match='lr_boundaries'):
    optim.schedule(train_cfg(lr_schedule='step', lr_boundaries=(1.5,)), total_steps)


def _run(tx, w0, grad, steps, drop_at=None, cfg=None):
  """Weights after `steps` updates of tx on the loss whose gradient is grad(w); with drop_at, a plateau decision
  (an error that does not improve, patience 1) divides the step size by 10 after that many steps."""
  params, state = {'W': jnp.asarray(w0)}, tx.init({'W': jnp.asarray(w0)})
  for k in range(steps):
    if drop_at is not None and k == drop_at:
      state, _ = optim.plateau_update(state, 0.0, cfg)  # sets best = 0
      state, message = optim.plateau_update(state, 0.0, cfg)  # not better: divided by 10
      assert message
    updates, state = tx.update({'W': grad(params['W'])}, state, params)
    params = {'W': params['W'] + updates['W']}
  return np.asarray(params['W'], np.float64)


def _paper(w0, grad, steps, eps, drop_at, mu=0.9, wd=0.0005):
  """The AlexNet paper's update, written out: v <- mu v - wd eps w - eps dL/dw, w <- w + v."""
  w, v = np.asarray(w0, np.float64), np.zeros_like(np.asarray(w0, np.float64))
  for k in range(steps):
    e = eps if drop_at is None or k < drop_at else eps / 10
    v = mu * v - wd * e * w - e * np.asarray(grad(jnp.asarray(w, jnp.float32)), np.float64)
    w = w + v
  return w


@pytest.mark.parametrize('schedule', ['step', 'plateau'])
def test_velocity_momentum_is_the_papers_rule_across_a_step_size_drop(schedule):
  """momentum_form='velocity' against a hand-written loop of the paper's equations, 5 steps past a division by 10
  (by lr_schedule 'step' and by the plateau rule); optax's 'trace' form differs there, and only there."""
  w0 = np.array([1.0, -2.0, 0.5], np.float32)
  grad = lambda w: 2.0 * w + 0.3  # the loss ||w||^2 + 0.3 sum(w)
  steps, drop = 15, 10
  cfg = train_cfg(lr_schedule=schedule, momentum=0.9, weight_decay=0.0005, momentum_form='velocity',
                  lr_boundaries=(drop / steps,), plateau_patience=1)
  got = _run(optim.optimizer(cfg, steps), w0, grad, steps, drop if schedule == 'plateau' else None, cfg)
  np.testing.assert_allclose(got, _paper(w0, grad, steps, 0.1, drop), rtol=1e-5, atol=1e-6)
  trace_cfg = train_cfg(**{**cfg.to_dict(), 'momentum_form': 'trace'})
  trace = lambda n: _run(optim.optimizer(trace_cfg, steps), w0, grad, n, drop if schedule == 'plateau' else None,
                         trace_cfg)
  velocity = lambda n: _run(optim.optimizer(cfg, steps), w0, grad, n, drop if schedule == 'plateau' else None, cfg)
  np.testing.assert_allclose(trace(drop), velocity(drop), rtol=1e-5, atol=1e-6)  # the same before the drop
  assert np.abs(trace(steps) - velocity(steps)).max() > 1e-3, 'after the drop, the forms differ'


def test_an_unknown_momentum_form_is_refused():
  with pytest.raises(ConfigError, match="train.momentum_form 'paper' is unknown; choose one of trace, velocity"):
    optim.optimizer(train_cfg(momentum_form='paper', momentum=0.9), 10)
