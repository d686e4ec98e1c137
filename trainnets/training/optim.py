"""The optimiser and step-size schedule of every trainer, built from config.train so ablations can change them.

Keys (under `train`; a key is read only where the chosen optimiser or schedule uses it):
  optimizer       'sgd' (with `momentum`; 0 is the lecture's plain SGD) or 'adam'
  momentum_form   with momentum, where the step size enters:
                  'trace'     optax's: t <- mu t + g, w <- w - eta_k t (a step-size drop acts at once)
                  'velocity'  the AlexNet paper's: v <- mu v - eta_k g, w <- w + v (v still carries the old
                              step sizes for a few steps after a drop); both the same while eta_k is constant
  learning_rate   eta_0 > 0
  lr_schedule     'constant'      eta_k = eta_0
                  'inverse_time'  eta_k = eta_0 / (1 + k / lr_decay_steps)  (the classic decaying SGD rate)
                  'cosine'        eta_0 decayed to 0 over the run's total steps
                  'step'          divided by 10 at each of `lr_boundaries` (fractions of the run)
                  'plateau'       divided by `plateau_factor` when the per-epoch error (the validation split's,
                                  data.num_validation) has not improved by `plateau_min_delta` for
                                  `plateau_patience` evaluations, at most
                                  `plateau_reductions` times: the AlexNet paper's "divide by 10 when the
                                  validation error stops improving", decided by optax.contrib.reduce_on_plateau
                                  (the trainer calls plateau_update after each evaluation, so only trainers that
                                  evaluate during training offer it)
  weight_decay    added to the gradient as weight_decay * w before the step (the AlexNet paper's form)
  weight_decay_on 'weights' (the kernels and weight matrices, W and V; not the biases b, W0, V0), as the
                  AlexNet authors' cuda-convnet layer files and Caffe's reference AlexNet apply it, or 'all'
"""

import jax
import numpy as np
import optax

from trainnets.errors import ConfigError

SCHEDULES = ('constant', 'inverse_time', 'cosine', 'step', 'plateau')
OPTIMIZERS = ('sgd', 'adam')
MOMENTUM_FORMS = ('trace', 'velocity')
DECAYED = ('weights', 'all')
WEIGHTS = ('W', 'V')  # the parameter names of kernels and weight matrices (nets/); biases are b, W0 and V0


def decay_mask(params, which):
  """A pytree of bools like `params`: which parameters weight decay applies to ('weights' or 'all')."""
  name = lambda path: getattr(path[-1], 'key', None)
  return jax.tree_util.tree_map_with_path(lambda path, _: which == 'all' or name(path) in WEIGHTS, params)


def schedule(train_cfg, total_steps, schedules=SCHEDULES, learning_rate=None):
  """eta_k as a function of the step k (optax's form), for a run of `total_steps` steps. `learning_rate`: eta_0
  in place of train.learning_rate (a traced value: one program for many step sizes)."""
  eta0 = train_cfg.learning_rate
  if not eta0 > 0:
    raise ConfigError(f'train.learning_rate must be > 0, got {eta0}; pass e.g. --config.train.learning_rate=0.1')
  if learning_rate is not None:
    eta0 = learning_rate
  name = train_cfg.lr_schedule
  if name not in schedules:
    raise ConfigError(f'train.lr_schedule {name!r} is unknown here; choose one of {", ".join(schedules)}')
  if name in ('constant', 'plateau'):
    return optax.constant_schedule(eta0)
  if name == 'inverse_time':
    if train_cfg.lr_decay_steps <= 0:
      raise ConfigError(f'train.lr_decay_steps must be > 0 for lr_schedule inverse_time, got '
                        f'{train_cfg.lr_decay_steps}')
    return lambda k: eta0 / (1.0 + k / train_cfg.lr_decay_steps)
  if name == 'cosine':
    return optax.cosine_decay_schedule(eta0, max(total_steps, 1))
  boundaries = tuple(train_cfg.lr_boundaries)
  if not all(0 < b < 1 for b in boundaries):
    raise ConfigError(f'train.lr_boundaries must be fractions of the run in (0, 1), got {boundaries}')
  return optax.piecewise_constant_schedule(eta0, {int(b * total_steps): 0.1 for b in boundaries})


def optimizer(train_cfg, total_steps, schedules=SCHEDULES, learning_rate=None):
  """The optax transformation of config.train for a run of `total_steps` steps; `schedules`: those the trainer
  supports; `learning_rate`: eta_0 in place of train.learning_rate (schedule). Raises ConfigError naming the
  first bad value."""
  if train_cfg.weight_decay < 0:
    raise ConfigError(f'train.weight_decay must be >= 0, got {train_cfg.weight_decay}')
  sched = schedule(train_cfg, total_steps, schedules, learning_rate)
  if train_cfg.optimizer == 'sgd':
    if not 0 <= train_cfg.momentum < 1:
      raise ConfigError(f'train.momentum must be in [0, 1), got {train_cfg.momentum}')
    form = train_cfg.momentum_form
    if form not in MOMENTUM_FORMS:
      raise ConfigError(f'train.momentum_form {form!r} is unknown; choose one of {", ".join(MOMENTUM_FORMS)}')
    if form == 'velocity' and train_cfg.momentum:
      return _velocity_sgd(train_cfg, sched)
    step = optax.sgd(sched, momentum=train_cfg.momentum or None)
  elif train_cfg.optimizer == 'adam':
    step = optax.adam(sched)
  else:
    raise ConfigError(f'train.optimizer {train_cfg.optimizer!r} is unknown; choose one of {", ".join(OPTIMIZERS)}')
  parts = []
  if train_cfg.weight_decay:
    parts.append(_decay(train_cfg))
  parts.append(step)
  if train_cfg.lr_schedule == 'plateau':
    parts.append(plateau_scale(train_cfg))
  return optax.chain(*parts) if len(parts) > 1 else step


def _velocity_sgd(train_cfg, sched):
  """The AlexNet paper's update, v <- mu v - wd eta_k w - eta_k g, w <- w + v: the step size (with the plateau
  factor) scales each gradient before it enters the velocity."""
  parts = []
  if train_cfg.weight_decay:
    parts.append(_decay(train_cfg))
  parts.append(optax.scale_by_learning_rate(sched))  # -eta_k (g + wd w)
  if train_cfg.lr_schedule == 'plateau':
    parts.append(plateau_scale(train_cfg))
  parts.append(optax.trace(decay=train_cfg.momentum))  # v <- mu v + (-eta_k ...); the update is v
  return optax.chain(*parts)


def _decay(train_cfg):
  which = train_cfg.weight_decay_on
  if which not in DECAYED:
    raise ConfigError(f'train.weight_decay_on {which!r} is unknown; choose one of {", ".join(DECAYED)}')
  return optax.add_decayed_weights(train_cfg.weight_decay, mask=lambda p: decay_mask(p, which))


def learning_rate(sched, opt_state, step):
  """The step size of the update that made `step` (1-based): sched(step - 1), times the plateau factor if any."""
  rate = float(sched(max(step - 1, 0)))
  for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)):
    if isinstance(s, optax.contrib.ReduceLROnPlateauState):
      rate *= float(s.scale)
  return rate


def plateau_rule(train_cfg):
  """optax's reduce_on_plateau with this config's rule: a value improves on the best by more than
  plateau_min_delta (absolute) or counts towards plateau_patience; the scale is divided by plateau_factor, down to
  plateau_factor ** -plateau_reductions. Fed one evaluated error at a time (accumulation_size=1)."""
  factor = 1.0 / train_cfg.plateau_factor
  return optax.contrib.reduce_on_plateau(factor=factor, patience=train_cfg.plateau_patience, rtol=0.0,
                                         atol=train_cfg.plateau_min_delta, cooldown=0, accumulation_size=1,
                                         min_scale=factor ** train_cfg.plateau_reductions)


def plateau_scale(train_cfg):
  """Scales updates by the scale in optax's ReduceLROnPlateauState, which `plateau_update` changes between steps.

  optax's own update both scales and decides, and wants the monitored value at every step; here the decision is
  taken once per evaluation (plateau_update), so the step only reads the scale."""
  rule = plateau_rule(train_cfg)

  def update(updates, state, params=None):
    del params
    return optax.tree.scale(state.scale, updates), state

  return optax.GradientTransformation(rule.init, update)


def _plateau_state(opt_state):
  """(index, state) of the ReduceLROnPlateauState in a chain's state."""
  (found,) = [(i, s) for i, s in enumerate(opt_state) if isinstance(s, optax.contrib.ReduceLROnPlateauState)]
  return found


def plateau_update(opt_state, error, train_cfg, split='validation'):
  """The optimiser state after an evaluation with this error (on `split`): the same unless lr_schedule is 'plateau';
  then optax's rule (plateau_rule) sees the error. Returns (state, a message when the scale fell, or None)."""
  if train_cfg.lr_schedule != 'plateau':
    return opt_state, None
  i, before = _plateau_state(opt_state)
  _, after = plateau_rule(train_cfg).update({}, before, value=error)
  after = jax.tree.map(lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding), after, before)
  message = None
  if float(after.scale) < float(before.scale):
    reductions = round(np.log(float(after.scale)) / -np.log(train_cfg.plateau_factor))
    message = (f'{split} error {error:.4f} has not improved on {float(before.best_value):.4f} for '
               f'{train_cfg.plateau_patience} evaluations: learning rate x{float(after.scale):g} (reduction '
               f'{reductions} of {train_cfg.plateau_reductions})')
  return (*opt_state[:i], after, *opt_state[i + 1:]), message
