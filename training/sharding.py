"""How arrays are laid out over devices: the one module that builds meshes and shardings.

Data-parallel training uses a 1-D mesh ('data',): the global batch is split over it and parameters are replicated.

A sweep of independent models shards its leading model axis over a 1-D mesh ('models',) of every device: each
device trains its share of the models, with no communication. The same code runs on one CPU, on N CPU devices
(one per core, see `training.cli.cpu_devices_flag`), on GPUs and on TPUs.
"""
import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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


def check_batch_divides(global_batch, mesh):
  """Raises ValueError (the trainer turns it into a ConfigError) unless the mesh splits the batch evenly."""
  if global_batch % mesh.size:
    raise ValueError(f'the global batch of {global_batch} does not split over {mesh.size} devices; pass a '
                     f'multiple of {mesh.size}, e.g. --config.train.batch_size={max(1, global_batch // mesh.size) * mesh.size}')
