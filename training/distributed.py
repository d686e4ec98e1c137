"""Multi-process JAX jobs: one process per host (or per GPU), started by the cluster's scheduler.

JAX's own multi-controller runtime does the work: `jax.distributed.initialize` connects the processes through a
coordinator, after which `jax.devices()` lists every device of the job and one jitted step spans them (XLA's
collectives: NCCL on GPUs, ICI on TPUs, gloo on CPUs). This module only decides how to start it:

  - flags --coordinator_address=HOST:PORT --num_processes=N --process_id=I (all three, or none);
  - else a SLURM job step with more than one task (srun), or a multi-host TPU VM: JAX reads the scheduler's
    environment itself;
  - else a single process: nothing changes.

Every process runs the same command. Each reads its own part of every global batch (data/pipeline.py), the
checkpoint directory must be shared by all of them (orbax saves collectively), and only process 0 writes
metrics, figures and results. If a process dies, the others fail at their next collective (gloo, NCCL) or when
the coordinator misses its heartbeats (HEARTBEAT_TIMEOUT_S); they then exit non-zero with one line, never hang.
"""
import os
import sys
import traceback

HEARTBEAT_TIMEOUT_S = 60  # a process silent this long is declared dead and the job ends
INIT_TIMEOUT_S = 300  # how long processes wait for each other at start-up
EXIT_PEER_FAILED = 3


class DistributedError(Exception):
  """The distributed flags are inconsistent (a UserError is raised from it by the entry points)."""


def scheduler():
  """'slurm' or 'tpu' when the environment describes a multi-process job JAX can join by itself, else None."""
  if 'SLURM_JOB_ID' in os.environ and int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_STEP_ID' in os.environ:
    return 'slurm'
  if ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    return 'tpu'
  return None


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Joins the job described by the flags or the scheduler; returns a one-line description, or None when this
  is a single-process run. Must run before anything else touches JAX's devices."""
  given = [v is not None and v != '' for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise DistributedError('pass all three of --coordinator_address, --num_processes and --process_id, or none')
  import jax  # noqa: PLC0415

  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise DistributedError(f'--process_id={process_id} must be in 0..{num_processes - 1} '
                             f'(--num_processes={num_processes})')
    if num_processes == 1:
      return None
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=INIT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    source = 'flags'
  elif (source := scheduler()):
    jax.distributed.initialize(initialization_timeout=INIT_TIMEOUT_S, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  else:
    return None
  return (f'process {jax.process_index()} of {jax.process_count()} ({source}): {jax.local_device_count()} local '
          f'of {jax.device_count()} devices')


def is_multiprocess():
  import jax  # noqa: PLC0415

  return jax.process_count() > 1


def is_main():
  """True in process 0, the one that writes metrics, figures and results."""
  import jax  # noqa: PLC0415

  return jax.process_index() == 0


def process():
  """(index, count) of this process in the job; (0, 1) for a single process."""
  import jax  # noqa: PLC0415

  return jax.process_index(), jax.process_count()


def main_first(fn):
  """fn() in process 0, then, once it has returned, in every other process (e.g. preparing a dataset or a
  workdir that all of them then read). A single process just calls it."""
  if not is_multiprocess():
    return fn()
  from jax.experimental import multihost_utils  # noqa: PLC0415

  out = fn() if is_main() else None
  multihost_utils.sync_global_devices(f'main_first:{getattr(fn, "__name__", "fn")}')
  return out if is_main() else fn()


def any_process(flag):
  """True in every process if `flag` is true in any of them (a collective: every process must call it)."""
  if not is_multiprocess():
    return bool(flag)
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def exit_after_failure(error):
  """In a multi-process job, an exception that is not the user's mistake most likely means another process died
  (a collective lost its peer). Print the traceback, then one last line that says so, and leave at once: a
  normal exit would wait at JAX's shutdown barrier for the dead process."""
  import jax  # noqa: PLC0415

  traceback.print_exception(error, file=sys.stderr)
  first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
  print(f'error: process {jax.process_index()} of {jax.process_count()} stopped: {first}. If another process '
        'died, its log says why; start all processes again with the same command to resume from the last '
        'checkpoint', file=sys.stderr, flush=True)
  os._exit(EXIT_PEER_FAILED)
