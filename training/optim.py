"""Optimisers and step-size schedules eta_k, built from a config so ablations can change them.

Config keys (under `train`):
  learning_rate   eta_0 > 0
  lr_schedule     'constant'      eta_k = eta_0
                  'inverse_time'  eta_k = eta_0 / (1 + k / lr_decay_steps)  (the classic decaying SGD rate)
                  'cosine'        eta_0 decayed to 0 over lr_decay_steps
  lr_decay_steps  > 0, used by the decaying schedules
  momentum        0 for the lecture's plain SGD
"""
import optax

from training.errors import ConfigError

SCHEDULES = ('constant', 'inverse_time', 'cosine')


def schedule(train_cfg):
  eta0 = train_cfg.learning_rate
  if not eta0 > 0:
    raise ConfigError(f'train.learning_rate must be > 0, got {eta0}; pass e.g. --config.train.learning_rate=0.1')
  name = train_cfg.lr_schedule
  if name == 'constant':
    return optax.constant_schedule(eta0)
  if train_cfg.lr_decay_steps <= 0:
    raise ConfigError(f'train.lr_decay_steps must be > 0 for schedule {name!r}, got {train_cfg.lr_decay_steps}')
  if name == 'inverse_time':
    return lambda k: eta0 / (1.0 + k / train_cfg.lr_decay_steps)
  if name == 'cosine':
    return optax.cosine_decay_schedule(eta0, train_cfg.lr_decay_steps)
  raise ConfigError(f'train.lr_schedule {name!r} is unknown; choose one of {SCHEDULES}')


def optimizer(train_cfg):
  """SGD (with momentum when train.momentum > 0) on the configured schedule."""
  if not 0 <= train_cfg.momentum < 1:
    raise ConfigError(f'train.momentum must be in [0, 1), got {train_cfg.momentum}')
  return optax.sgd(schedule(train_cfg), momentum=train_cfg.momentum or None)


OPTIMIZERS = ('sgd', 'adam')


def classifier_optimizer(train_cfg, total_steps):
  """The optimiser of a classifier run, from `train`:

    optimizer       'sgd' (with `momentum`) or 'adam'
    learning_rate   eta_0 > 0
    lr_schedule     'constant', 'cosine' (to 0 over the run), or 'step' (divided by 10 at each of
                    `lr_boundaries`, fractions of the run)
    weight_decay    added to the gradient as weight_decay * w before the step (the AlexNet paper's form)
  """
  eta0 = train_cfg.learning_rate
  if not eta0 > 0:
    raise ConfigError(f'train.learning_rate must be > 0, got {eta0}')
  if train_cfg.weight_decay < 0:
    raise ConfigError(f'train.weight_decay must be >= 0, got {train_cfg.weight_decay}')
  name = train_cfg.lr_schedule
  if name == 'constant':
    sched = optax.constant_schedule(eta0)
  elif name == 'cosine':
    sched = optax.cosine_decay_schedule(eta0, max(total_steps, 1))
  elif name == 'step':
    sched = optax.piecewise_constant_schedule(
        eta0, {int(b * total_steps): 0.1 for b in train_cfg.lr_boundaries})
  else:
    raise ConfigError(f'train.lr_schedule {name!r} is unknown; choose one of constant, cosine, step')
  if train_cfg.optimizer == 'sgd':
    if not 0 <= train_cfg.momentum < 1:
      raise ConfigError(f'train.momentum must be in [0, 1), got {train_cfg.momentum}')
    step = optax.sgd(sched, momentum=train_cfg.momentum or None)
  elif train_cfg.optimizer == 'adam':
    step = optax.adam(sched)
  else:
    raise ConfigError(f'train.optimizer {train_cfg.optimizer!r} is unknown; choose one of {OPTIMIZERS}')
  if train_cfg.weight_decay:
    return optax.chain(optax.add_decayed_weights(train_cfg.weight_decay), step)
  return step
