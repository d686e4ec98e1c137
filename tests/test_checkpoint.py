"""trainnets/training/checkpoint.py: a checkpoint whose state has another structure than the one the run builds
(an optimiser state from an older version of the code, say) is refused as such, not as a damaged file."""
import flax
import jax
import jax.numpy as jnp
import pytest

from trainnets.errors import CheckpointError
from trainnets.training import checkpoint


@flax.struct.dataclass
class State:
  params: dict
  opt_state: tuple
  step: jnp.ndarray
  rng: jnp.ndarray


def test_a_state_of_another_structure_is_refused_as_such(tmp_path):
  saved = State({'w': jnp.ones(3)}, (jnp.zeros(()), jnp.ones(())), jnp.asarray(4), jax.random.PRNGKey(0))
  with checkpoint.Checkpoints(str(tmp_path), keep=2, asynchronous=False) as ckpt:
    ckpt.save(4, saved)
  grown = saved.replace(opt_state=(*saved.opt_state, jnp.zeros(())))  # one more leaf in the optimiser state
  placed = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with checkpoint.Checkpoints(str(tmp_path), keep=2, asynchronous=False) as ckpt:
    assert ckpt.restore(4, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed),
                                        saved)).step == 4  # the state it was saved as restores
    with pytest.raises(CheckpointError, match=r'holds a training state of another structure .* new --workdir'):
      ckpt.restore(4, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed), grown))
