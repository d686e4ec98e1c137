"""Checkpoints of a training state with orbax's CheckpointManager, verified when they are restored.

A checkpoint holds everything that decides the result: parameters, optimiser state, the step (which fixes the
data position: epoch = step // steps_per_epoch, and the batches of that epoch already seen) and the base PRNG key
(per-step keys are fold_in(key, step)). Beside the state, a small JSON item records the step, the sha256 of the
parameters and the sha256 of the whole state (every leaf with its path: parameters, optimiser state with the
plateau rule's, step and key). orbax writes each checkpoint into a temporary directory and renames it when
complete, so a checkpoint cut short by a kill is never listed; a listed one whose state does not hash to the
recorded values is refused with an error naming it, never loaded silently. Checkpoints written before the
whole-state hash was recorded are checked on their parameters only.
"""
import contextlib
import hashlib
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from trainnets import errors
from trainnets.errors import CheckpointError
from trainnets.errors import one_line


def host_array(a):
  """A numpy copy of a (possibly multi-process) array. Arrays split over other processes' devices are gathered,
  a collective that every process must call."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(jax.device_get(a))


def params_sha256(params):
  """sha256 over the parameter arrays' bytes, leaves in jax.tree order (dict keys sorted): equal iff bitwise equal."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    a = host_array(leaf)
    h.update(str((a.dtype, a.shape)).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def state_sha256(state):
  """sha256 over every leaf of a training state with its tree path, dtype and shape: whatever a resume reads."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    a = host_array(leaf)
    h.update(f'{jax.tree_util.keystr(path)} {a.dtype} {a.shape}'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


class Checkpoints:
  """The checkpoints of one workdir, the last `keep` kept; the training loop decides when to save."""

  def __init__(self, directory, *, keep, asynchronous=True):
    # create=False: opening, listing and restoring write nothing (a refused command leaves the workdir as it was);
    # the directory is made by the first save
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False, enable_async_checkpointing=asynchronous)
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))
    self.directory = directory
    self._pending = None  # the step of the last save asked for (it may still be being written)
    self._closed = False

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state):
    """Saves `state` at `step` (asynchronously: training goes on while it is written). A failure to write, now
    or of an earlier asynchronous save, is a CheckpointError; the checkpoints saved before it are kept."""
    meta = {'step': int(step), 'params_sha256': params_sha256(state.params), 'state_sha256': state_sha256(state)}
    with self._writing(None):  # the previous save's failure, if any, under its own step (orbax waits here too)
      self._manager.wait_until_finished()
    with self._writing(step):
      os.makedirs(self.directory, exist_ok=True)
      self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)), force=True)
    self._pending = int(step)

  @contextlib.contextmanager
  def _writing(self, step):
    """Turns orbax's errors while writing (a full disk, a vanished directory) into one CheckpointError line."""
    try:
      yield
    except Exception as e:
      if jax.process_count() > 1 and not errors.os_error(e):
        raise  # not the file system: in a job, most likely a collective of the save lost its peer (cli reports it)
      step = self._pending if step is None else step
      raise CheckpointError(f'could not save the checkpoint at step {step} in {self.directory} '
                            f'({one_line(e)}); the checkpoints saved before it are kept: free space or fix the '
                            'directory, then run the same command to resume') from e

  def restore(self, step, abstract_state):
    """The state saved at `step`, laid out like `abstract_state` (shapes, dtypes and shardings); verified."""
    where = f'{self.directory}/{step}'
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      if 'tree structures do not match' in str(e):  # orbax's ValueError: the file is sound, the state another
        raise CheckpointError(f'checkpoint {where} holds a training state of another structure than this run '
                              'builds (another model, optimiser or schedule, or a state saved by an older version '
                              'of this code); resume it with the code and config that wrote it, or train into a '
                              'new --workdir') from None
      raise CheckpointError(f'checkpoint {where} cannot be read ({one_line(e)}); remove that directory to resume '
                            'from the previous checkpoint, or pass a new --workdir') from e
    state, meta = restored['state'], restored['meta']
    if not isinstance(meta, dict):
      meta = {}
    damaged = None
    if meta.get('step') != step or meta.get('params_sha256') != params_sha256(state.params):
      damaged = 'parameters do'
    elif 'state_sha256' in meta and meta['state_sha256'] != state_sha256(state):
      damaged = 'optimiser state, step or key does'
    if damaged:
      raise CheckpointError(f'checkpoint {where} is corrupt: its {damaged} not match the sha256 recorded when it '
                            'was saved; remove it to resume from the previous checkpoint')
    return state

  def wait(self):
    if self._closed:
      return
    with self._writing(None):
      self._manager.wait_until_finished()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    """Closes after a block that ended well. After a user error (the run stops with one line), a checkpoint still
    being written is completed first, so the last save is kept; after anything else the process is ending."""
    if exc_type is None:
      self.close()
    elif issubclass(exc_type, errors.UserError):
      try:
        self.wait()
      except errors.UserError:
        pass
    return False

  def close(self):
    """Waits for the last save and releases orbax's threads; closing again does nothing."""
    if self._closed:
      return
    self.wait()
    self._manager.close()
    self._closed = True

