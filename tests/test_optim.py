"""The classifier's optimisers: weight decay as the AlexNet paper adds it, and the plateau schedule."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from errors import ConfigError
from training import optim


def train_cfg(**kw):
  return ml_collections.ConfigDict({'optimizer': 'sgd', 'learning_rate': 0.1, 'lr_schedule': 'plateau',
                                    'momentum': 0.0, 'weight_decay': 0.0, 'plateau_patience': 2,
                                    'plateau_min_delta': 0.001, 'plateau_factor': 10.0, 'plateau_reductions': 3,
                                    **kw})


def test_plateau_divides_the_step_when_the_error_stops_improving():
  cfg = train_cfg()
  tx = optim.classifier_optimizer(cfg, 100)
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
  tx = optim.classifier_optimizer(cfg, 100)
  params = {'w': jnp.full(2, 2.0)}
  state = tx.init(params)
  assert optim.plateau_update(state, 0.1, cfg) == (state, None)
  np.testing.assert_allclose(tx.update({'w': jnp.zeros(2)}, state, params)[0]['w'], -0.1 * 0.5 * 2.0)
  with pytest.raises(ConfigError, match='plateau'):
    optim.classifier_optimizer(train_cfg(lr_schedule='sometimes'), 100)
