"""Models as pure functions: `init(key, ...) -> params` and `apply(params, x, ...)` over nested dicts of arrays.

Plain JAX, differentiable by grad, jvp and hessian on every backend; the speed kernels of kernels/ come in only
as the `ops` a trainer hands to `apply`. A model for the classifier trainer is a module here that defines Arch
(from_config, validate), init and apply, found by config.model.name.
"""
import dataclasses
import importlib
import math
import pkgutil

import jax

from errors import ConfigError


def num_params(params):
  """Number of parameters of a pytree of arrays (or of jax.ShapeDtypeStructs)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def _tupled(v):
  return tuple(_tupled(x) for x in v) if isinstance(v, (list, tuple)) else v


def arch_fields(cls, model_cfg):
  """The keys of a config's `model` section that name fields of the dataclass `cls`, lists made tuples: what
  every model's Arch.from_config starts from."""
  names = {f.name for f in dataclasses.fields(cls)}
  return {k: _tupled(v) for k, v in model_cfg.items() if k in names}


def module(name):
  """The model module nets/<name>.py (one that defines Arch, init and apply), found by config.model.name; a
  ConfigError listing the models if there is none."""
  is_model = lambda m: all(hasattr(m, a) for a in ('Arch', 'init', 'apply'))
  if isinstance(name, str) and name.isidentifier():
    try:
      found = importlib.import_module(f'nets.{name}')
    except ModuleNotFoundError as e:
      if e.name != f'nets.{name}':
        raise
      found = None
    if found is not None and is_model(found):
      return found
  models = sorted(m.name for m in pkgutil.iter_modules(__path__) if is_model(importlib.import_module(f'nets.{m.name}')))
  raise ConfigError(f'model.name {name!r} is unknown; choose one of {", ".join(models)} (modules of nets/)')
