"""Models as pure functions: `init(key, ...) -> params` and `apply(params, x, ...)` over nested dicts of arrays.

Plain JAX, differentiable by grad, jvp and hessian on every backend; the speed kernels of trainnets/kernels/ come in
only as the `ops` a trainer hands to `apply`. A model for the classifier trainer is a module here that defines Arch
(from_config, validate), init and apply, found by config.model.name.
"""
import dataclasses
import math

import jax

from trainnets import named


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
  return named.module('nets', name, ('Arch', 'init', 'apply'), 'model.name')
