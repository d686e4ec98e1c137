"""How arrays are laid out over devices: the one module that builds meshes and shardings.

Data-parallel training uses a 1-D mesh ('data',): the global batch is split over it and parameters are replicated;
optionally the large dense layers' weights (and their optimiser state) are split over it too, by output unit
(`state_shardings(shard_dense=True)`): AlexNet's fc6-fc8 hold 58.6M of its 61M parameters.

A sweep of independent models shards its leading model axis over a 1-D mesh ('models',) of every device: each
device trains its share of the models, with no communication. The same code runs on one CPU, on N CPU devices
(one per core, see `training.process.xla_flags`), on GPUs and on TPUs.
"""
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


def model_mesh(devices=None):
  """A 1-D mesh ('models',) over `devices` (default: all)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ('models',))


def padded_count(n, mesh):
  """The smallest multiple of the mesh size that holds n models."""
  return -(-n // mesh.size) * mesh.size


def shard_models(tree, mesh):
  """Places every leaf with its leading axis split over the mesh's 'models' axis."""
  sharding = NamedSharding(mesh, P('models'))
  return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def data_mesh(devices=None):
  """A 1-D mesh ('data',) over `devices` (default: all) for data-parallel training."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ('data',))


def batch_sharding(mesh):
  """The global batch split along its leading axis over the 'data' axis."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh):
  """Every device holds the whole array (parameters and optimiser state, by default)."""
  return NamedSharding(mesh, P())


def check_batch_divides(global_batch, mesh, key='train.batch_size'):
  """Raises ValueError (the trainer turns it into a ConfigError) unless the mesh splits the batch evenly."""
  if global_batch % mesh.size:
    raise ValueError(f'the global batch of {global_batch} ({key}) does not split over {mesh.size} devices; pass '
                     f'a multiple of {mesh.size}, e.g. --config.{key}={max(1, global_batch // mesh.size) * mesh.size}')


def state_shardings(abstract_state, mesh, *, shard_dense=False):
  """The sharding of every leaf of a training state: replicated, except, with shard_dense, every 2-D weight 'W' of
  a dense layer (a key starting with 'fc' or 'out', in the parameters and in the optimiser's moments alike) whose
  output width the mesh divides: split by columns over 'data'."""
  rep, cols = replicated(mesh), NamedSharding(mesh, P(None, 'data'))

  def rule(path, leaf):
    keys = [getattr(k, 'key', None) for k in path]
    dense = any(isinstance(k, str) and k.startswith(('fc', 'out')) for k in keys) and keys[-1] == 'W'
    return cols if shard_dense and dense and leaf.ndim == 2 and leaf.shape[1] % mesh.size == 0 else rep

  return jax.tree_util.tree_map_with_path(rule, abstract_state)
