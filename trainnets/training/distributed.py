"""Multi-process JAX jobs: one process per host (or per GPU), started by the cluster's scheduler.

JAX's own multi-controller runtime does the work: `jax.distributed.initialize` connects the processes through a
coordinator, after which `jax.devices()` lists every device of the job and one jitted step spans them (XLA's
collectives: NCCL on GPUs, ICI on TPUs, gloo on CPUs). This module only decides how to start it:

  - flags --coordinator_address=HOST:PORT --num_processes=N --process_id=I (all three, or none);
  - else a SLURM job step with more than one task (srun), or a multi-host TPU VM: JAX reads the scheduler's
    environment itself;
  - else a single process: nothing changes.

Every process runs the same command. Each reads its own part of every global batch (trainnets/data/pipeline.py), the
checkpoint directory must be shared by all of them (orbax saves collectively), and only process 0 writes
metrics, figures and results. If a process dies, the others fail at their next collective (gloo, NCCL) or when
the coordinator misses its heartbeats (HEARTBEAT_TIMEOUT_S); they then exit non-zero with one line, never hang.
"""
import os
import socket
import sys
import threading
import time
import traceback

from trainnets.errors import DistributedError

HEARTBEAT_TIMEOUT_S = 60  # a process silent this long is declared dead and the job ends
JOIN_TIMEOUT_S = 120  # default of --join_timeout: how long processes wait for each other at start-up
EXIT_PEER_FAILED = 3
EXIT_USER_ERROR = 2


def parse_address(address):
  """(host, port) of a coordinator address HOST:PORT (IPv6 hosts in brackets: [::1]:1234)."""
  host, sep, port = address.rpartition(':')
  bracketed = host.startswith('[') and host.endswith(']')
  host = host[1:-1] if bracketed else host
  if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or (':' in host and not bracketed):
    raise DistributedError(f'--coordinator_address={address} is not HOST:PORT with a port in 1..65535; pass e.g. '
                           '--coordinator_address=10.0.0.1:1234, the host of process 0 and a free port')
  return host, int(port)


def _missing_line(missing, n, address, timeout):
  return (f'processes {", ".join(map(str, missing))} of {n} did not join the job at {address} within {timeout:g} s; '
          'start every process with the same --coordinator_address and --num_processes (each with its own '
          '--process_id), or allow more time with --join_timeout')


def rendezvous(address, num_processes, process_id, timeout):
  """Every process checks in with process 0, over TCP at the coordinator's own address, before JAX starts: JAX's
  start-up, when a process is missing, ends the process in C++ after its timeout, without saying which process
  is missing. Process 0 listens and waits up to `timeout` seconds for processes 1..N-1; each of them retries
  until it reaches process 0. A DistributedError names the processes that did not join (in every process that
  is waiting), or says that process 0 could not be reached. Process 0 then closes the port for JAX's coordinator.
  """
  host, port = parse_address(address)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    try:
      server = socket.create_server(('', port), family=family)
    except OSError as e:
      raise DistributedError(f'process 0 cannot listen on port {port} of --coordinator_address={address} '
                             f'({e.strerror}); pass a free port') from None
    joined = {}
    with server:
      while len(joined) < num_processes - 1 and time.monotonic() < deadline:
        server.settimeout(max(0.05, deadline - time.monotonic()))
        try:
          conn, _ = server.accept()
        except (TimeoutError, socket.timeout):
          break
        conn.settimeout(10)
        try:
          their_id, their_n = (int(v) for v in conn.makefile().readline().split())
        except (OSError, ValueError):
          conn.close()
          continue
        problem = None
        if their_n != num_processes:
          problem = f'process {their_id} was started with --num_processes={their_n}, process 0 with {num_processes}'
        elif their_id in joined or not 0 < their_id < num_processes:
          problem = f'--process_id={their_id} was given to two processes, or is out of range'
        if problem:
          conn.sendall(f'error {problem}\n'.encode())
          conn.close()
          for c in joined.values():
            c.sendall(f'error {problem}\n'.encode())
            c.close()
          raise DistributedError(f'{problem}; start every process with the same flags and its own --process_id')
        joined[their_id] = conn
      missing = sorted(set(range(1, num_processes)) - set(joined))
      reply = f'missing {",".join(map(str, missing))}' if missing else 'go'
      for conn in joined.values():
        with conn:
          try:
            conn.sendall(f'{reply}\n'.encode())
            conn.recv(1)  # the other side closes first, so this port is free again at once for JAX
          except OSError:
            pass
    if missing:
      raise DistributedError(_missing_line(missing, num_processes, address, timeout))
    return
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=5)
      break
    except OSError:
      if time.monotonic() > deadline:
        raise DistributedError(f'process {process_id} of {num_processes} could not reach process 0 at {address} '
                               f'within {timeout:g} s; start process 0 there, or correct --coordinator_address, or '
                               'allow more time with --join_timeout') from None
      time.sleep(0.25)
  with conn:
    conn.settimeout(max(0.0, deadline - time.monotonic()) + 30)
    try:
      conn.sendall(f'{process_id} {num_processes}\n'.encode())
      reply = conn.makefile().readline().strip()
    except OSError:
      reply = ''
  if reply == 'go':
    return
  if reply.startswith('missing '):
    missing = [int(v) for v in reply.split()[1].split(',')]
    raise DistributedError(_missing_line(missing, num_processes, address, timeout))
  if reply.startswith('error '):
    raise DistributedError(f'{reply[6:]}; start every process with the same flags and its own --process_id')
  raise DistributedError(f'process 0 at {address} stopped answering while the job started; see its log')


def _watchdog(timeout, who):
  """A timer that ends this process with one line if JAX's start-up has not returned within `timeout`; JAX's
  own timeout would abort it later with a C++ stack trace. Cancel it once started."""

  def expire():
    print(f'error: {who}: the job\'s processes did not all join within {timeout:g} s; start every process of the '
          'job (or allow more time with --join_timeout)', file=sys.stderr, flush=True)
    os._exit(EXIT_USER_ERROR)

  timer = threading.Timer(timeout, expire)
  timer.daemon = True
  timer.start()
  return timer


def scheduler():
  """'slurm' or 'tpu' when the environment describes a multi-process job JAX can join by itself, else None."""
  if 'SLURM_JOB_ID' in os.environ and int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_STEP_ID' in os.environ:
    return 'slurm'
  if ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    return 'tpu'
  return None


def initialize(coordinator_address=None, num_processes=None, process_id=None, join_timeout=JOIN_TIMEOUT_S):
  """Joins the job described by the flags or the scheduler; returns a one-line description, or None when this
  is a single-process run. Processes wait `join_timeout` seconds for each other, then stop with one line. Must
  run before anything else touches JAX's devices."""
  given = [v is not None and v != '' for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise DistributedError('pass all three of --coordinator_address, --num_processes and --process_id, or none')
  if not join_timeout > 0:
    raise DistributedError(f'--join_timeout must be > 0 seconds, got {join_timeout}')
  if all(given):
    parse_address(coordinator_address)
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise DistributedError(f'--process_id={process_id} must be in 0..{num_processes - 1} '
                             f'(--num_processes={num_processes})')
    if num_processes == 1:
      return None
    rendezvous(coordinator_address, num_processes, process_id, join_timeout)
    source = 'flags'
    kw = {'coordinator_address': coordinator_address, 'num_processes': num_processes, 'process_id': process_id}
  elif (source := scheduler()):
    kw = {}
  else:
    return None
  import jax  # noqa: PLC0415

  who = process_id if process_id is not None else os.environ.get('SLURM_PROCID', '?')
  timer = _watchdog(join_timeout, f'process {who} ({source})')
  try:
    # JAX's own limit comes after the watchdog's, which ends the process with one line instead of a C++ abort.
    jax.distributed.initialize(**kw, initialization_timeout=int(join_timeout) + 60,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  finally:
    timer.cancel()
  return (f'process {jax.process_index()} of {jax.process_count()} ({source}): {jax.local_device_count()} local '
          f'of {jax.device_count()} devices')


def check_same_config(config_dict):
  """In a multi-process job, a DistributedError in every process unless all of them resolved the same config
  (a collective: every process calls it). Each process contributes a 32-bit digest per key, so every process
  can name the keys in which some process differs from process 0."""
  if not is_multiprocess():
    return
  import hashlib  # noqa: PLC0415
  import json  # noqa: PLC0415

  from jax.experimental import multihost_utils  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from trainnets.training import workdir  # noqa: PLC0415 (its flattening of config.json, the same keys)

  flat = workdir.flatten(config_dict)
  keys = sorted(flat)
  counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(keys)], np.uint32))).reshape(-1)
  if len(set(counts.tolist())) > 1:
    raise DistributedError(f'the processes resolved configs with different keys ({counts.tolist()} keys); start '
                           'every process with the same code, --config and overrides')
  digest = lambda k: int.from_bytes(hashlib.sha256(json.dumps([k, flat[k]], default=str).encode()).digest()[:4],
                                    'little')
  every = np.asarray(multihost_utils.process_allgather(np.asarray([digest(k) for k in keys], np.uint32)))
  bad = every.reshape(len(counts), len(keys)) != every.reshape(len(counts), len(keys))[:1]  # (process, key)
  if bad.any():
    differ = [k for k, column in zip(keys, bad.T) if column.any()]
    who = [str(p) for p in range(len(counts)) if bad[p].any()]
    raise DistributedError(f'process{"es" if len(who) > 1 else ""} {", ".join(who)} resolved another config than '
                           f'process 0 ({", ".join(differ[:5])}{" ..." if len(differ) > 5 else ""}); start every '
                           'process with the same --config and overrides')


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
  from jax.experimental import multihost_utils  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def exit_after_failure(error):
  """In a multi-process job, an exception that is not the user's mistake most likely means another process died
  (a collective lost its peer). Print one line that says so, with the file that keeps the traceback (for the
  rarer case of a bug in this process), and leave at once: a normal exit would wait at JAX's shutdown barrier
  for the dead process."""
  import tempfile  # noqa: PLC0415

  import jax  # noqa: PLC0415

  with tempfile.NamedTemporaryFile('w', prefix=f'process{jax.process_index()}-', suffix='.traceback',
                                   delete=False) as f:
    traceback.print_exception(error, file=f)
  first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
  print(f'error: process {jax.process_index()} of {jax.process_count()} stopped: {first}. If another process '
        'died, its log says why; start all processes again with the same command to resume from the last '
        f'checkpoint (this process\'s traceback: {f.name})', file=sys.stderr, flush=True)
  os._exit(EXIT_PEER_FAILED)
