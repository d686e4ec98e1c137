"""What a run logs: one writer for `metrics.jsonl` (a JSON object per logged step) and, where asked, TensorBoard
events in WORKDIR/tensorboard; and progress for people: a bar on a terminal, plain lines in a log file.

These follow CLU's conventions (clu.metric_writers: scalars and the config as hparams, to a writer per workdir;
clu.periodic_actions.ReportProgress: timestamped progress with a rate and an ETA) without CLU itself:
`import clu.metric_writers` imports TensorFlow (its SummaryWriter), about 4 s of a hidden-units run that trains
in seconds; CLU has no writer for metrics.jsonl, which is this project's record and what a resume reads; and
ReportProgress's first rate and ETA include compilation, which Progress leaves out.
"""
import collections
import concurrent.futures
import contextlib
import datetime
import io
import json
import os
import platform
import socket
import sys
import time

import jax
import numpy as np
import tqdm

from trainnets import files
from trainnets.training import workdir as workdir_lib


def _plain(v):
  if isinstance(v, (np.generic, np.ndarray)):
    return v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  return v


def tensorboard_tag(key):
  """The TensorBoard tag of a metrics.jsonl key: 'train_loss' -> 'train/loss', 'test_top5_error' ->
  'test/top5_error'; other keys as they are."""
  for prefix in ('train_', 'validation_', 'test_'):
    if key.startswith(prefix):
      return f'{prefix[:-1]}/{key[len(prefix):]}'
  return key


def command():
  """The command line this process runs, as a user would type it (python first)."""
  return ' '.join(['python', *sys.argv]) if sys.argv and sys.argv[0] else '(library call)'


def machine():
  """The machine a run ran on, in one line: processor and cores, JAX's devices, Python's and JAX's versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), cpu)
  except OSError:
    pass
  kinds = collections.Counter(d.device_kind for d in jax.devices())
  devices = ', '.join(f'{n} x {k}' for k, n in kinds.items())
  return (f'{cpu}, {os.cpu_count()} cores; {devices} ({jax.default_backend()}); Python '
          f'{platform.python_version()}, jax {jax.__version__}')


class _Closes:
  """`with x:` closes x at the end of the block, however it ends."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


class EventFile:
  """A TensorBoard event file in `directory`, written without TensorFlow: tensorboard's record format and protos
  over a plain file (tensorboard's own EventFileWriter opens files through tf.io.gfile, which imports TensorFlow:
  3.7 s on the 2-core development machine). Every event is on disk when its call returns: nothing to close."""

  def __init__(self, directory):
    from tensorboard.compat.proto import event_pb2  # noqa: PLC0415 (tensorboard's protos, only where asked)
    from tensorboard.compat.proto import summary_pb2  # noqa: PLC0415
    from tensorboard.summary.writer import record_writer  # noqa: PLC0415

    self._event, self._summary, self._record_writer = event_pb2.Event, summary_pb2.Summary, record_writer.RecordWriter
    os.makedirs(directory, exist_ok=True)
    self.path = os.path.join(directory, f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.'
                                        f'{os.getpid()}.v2')
    self._add(file_version='brain.Event:2')

  def _add(self, **fields):
    """Appends one event, the file closed again at once (as metrics.jsonl's lines): a full disk is one WriteError
    at the write, never an error at exit that would hide the first."""
    record = io.BytesIO()
    self._record_writer(record).write(self._event(wall_time=time.time(), **fields).SerializeToString())
    files.append_bytes(self.path, record.getvalue())

  def scalars(self, step, values):
    self._add(step=int(step), summary=self._summary(
        value=[self._summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()]))

  def hparams(self, step, hparams):
    """The config as TensorBoard's HParams view shows it: {name: bool, number or string}."""
    from tensorboard.plugins.hparams import summary_v2  # noqa: PLC0415

    self._add(step=int(step), summary=summary_v2.hparams_pb(hparams))


class MetricsWriter(_Closes):
  """Writes `metrics.jsonl` in a workdir, and with `tensorboard` the same scalars as TensorBoard events (their
  tags from tensorboard_tag) and `config` (the resolved config, as {dotted key: value}) for TensorBoard's HParams
  view. `start_step`: lines of later steps are dropped (a resumed run); from step 0, earlier event files too."""

  def __init__(self, workdir, start_step=None, tensorboard=False, config=None):
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    lines, self.rows = [], []  # the rows kept from before (a resumed run's, up to start_step)
    if start_step is not None and os.path.exists(self.path):
      kept = [(line, row) for line, row in zip(*workdir_lib.read_jsonl(self.path)) if row.get('step', 0) <= start_step]
      lines, self.rows = [line for line, _ in kept], [row for _, row in kept]
    with open(self.path, 'w') as f:
      f.writelines(lines)
    board = os.path.join(workdir, 'tensorboard')
    if tensorboard and not start_step and os.path.isdir(board):  # a run from step 0: earlier events are stale too
      for name in os.listdir(board):
        if name.startswith('events.out.tfevents.'):
          os.remove(os.path.join(board, name))
    self._events = EventFile(board) if tensorboard else None
    if self._events is not None and config is not None:
      flat = workdir_lib.flatten(workdir_lib.config_to_dict(config))
      self._events.hparams(start_step or 0, {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                                             for k, v in flat.items()})

  def write(self, step, **scalars):
    files.append_line(self.path, json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}) + '\n')
    if self._events is not None:
      self._events.scalars(step, {tensorboard_tag(k): _plain(v) for k, v in scalars.items()
                                  if k != 'epoch' and isinstance(_plain(v), (int, float))})

  def flush(self):
    pass  # every line and event is on disk when write returns

  close = flush


class WriteBehind(_Closes):
  """Calls run one at a time, in the order submitted, in another thread, while the caller goes on: a trainer's
  metrics rows written while its next epoch runs. A call's error is raised in the caller at the next `submit`, or
  at `close`, which waits for every call; leaving a `with` block on an error waits for them too, and keeps that
  error."""

  def __init__(self):
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='write-behind')
    self._pending = collections.deque()

  def submit(self, fn, *args, **kwargs):
    while self._pending and self._pending[0].done():
      self._pending.popleft().result()  # raises a finished call's error
    self._pending.append(self._pool.submit(fn, *args, **kwargs))

  def close(self):
    try:
      while self._pending:
        self._pending.popleft().result()
    finally:
      self._pool.shutdown(wait=True)

  def __exit__(self, exc_type, *exc):
    if exc_type is None:
      self.close()
    else:
      self._pool.shutdown(wait=True)
    return False


class NullWriter(_Closes):
  """Stands in for MetricsWriter in the processes of a multi-process job other than process 0."""

  rows = ()

  def write(self, step, **scalars):
    del step, scalars

  def flush(self):
    pass

  close = flush


class Rate:
  """Work per second between the steps it is asked at: rate.per_s(step) after `per_step` work per step."""

  def __init__(self, step, per_step, clock=time.time):
    self._step, self._time, self._per_step, self._clock = step, clock(), per_step, clock

  def per_s(self, step):
    now = self._clock()
    rate = self._per_step * (step - self._step) / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    return round(rate, 1)


def _clock(seconds):
  seconds = int(round(seconds))
  h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


class Progress(_Closes):
  """Progress for people. On a terminal, a tqdm bar; otherwise (a SLURM log, a file, a pipe) a plain, timestamped
  line on stderr at the first update that brings fields (epoch, loss, lr), then every `every_s` seconds and at the
  end:

    2026-12-06 20:58:01 [fashion_mnist] step 120/9380 (1.3%) epoch 1/10 loss 0.4123 lr 0.001 2,512 images/s
      elapsed 1:02 eta 61:24   (one line)

  `update(n, work=W, **fields)` counts n steps done with W units of work (images, model-updates) for the rate,
  measured since the previous line; `fields` are shown as given. The ETA is measured from the end of the first
  update on, so the first step's compilation does not inflate it (the first line has none). `start`: the steps
  done before this process (a resumed run), left out of the rate and the ETA.
  """

  def __init__(self, total, desc, *, unit, every_s=30.0, start=0, disable=False, stream=None, clock=time.monotonic):
    self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
    self.done, self._start = start, start
    self._stream = stream or sys.stderr
    self._clock = clock
    self._t0 = self._last_t = clock()
    self._after_first = None  # (time, steps done) at the end of the first update: the ETA's origin
    self._work, self._fields, self._lines, self._dirty = 0.0, {}, 0, False
    self._bar = None
    self._disabled = disable
    if not disable and self._stream.isatty():
      self._bar = tqdm.tqdm(total=total, desc=desc, initial=start, leave=False, dynamic_ncols=True, file=self._stream)

  def set_description(self, desc):
    self.desc = desc
    if self._bar is not None:
      self._bar.set_description(desc)

  def update(self, n=1, work=0.0, **fields):
    if self._after_first is None:
      self._after_first = (self._clock(), self.done + n)
    self.done += n
    self._work += work
    self._dirty = True
    self._fields.update(fields)
    if self._bar is not None:
      self._bar.update(n)
      shown = {k: v for k, v in fields.items() if k in ('loss', 'lr')}
      if shown:
        self._bar.set_postfix({k: f'{v:.4g}' for k, v in shown.items()}, refresh=False)
    elif not self._disabled and ((self._lines == 0 and fields) or self._clock() - self._last_t >= self.every_s):
      self._line()

  def line(self):
    """The plain progress line now (what a log shows), with the rate since the previous one."""
    now = self._clock()
    parts = [f'{datetime.datetime.now():%Y-%m-%d %H:%M:%S} [{self.desc}] step {self.done}/{self.total} '
             f'({100 * self.done / max(self.total, 1):.1f}%)']
    for k, v in self._fields.items():
      parts.append(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}')
    if self._work and now > self._last_t:
      parts.append(f'{self._work / (now - self._last_t):,.0f} {self.unit}/s')
    parts.append(f'elapsed {_clock(now - self._t0)}')
    if self._after_first and self.done > self._after_first[1] and self.done < self.total:
      since, steps = now - self._after_first[0], self.done - self._after_first[1]
      parts.append(f'eta {_clock(since / steps * (self.total - self.done))}')
    self._last_t, self._work = now, 0.0
    return ' '.join(parts)

  def _line(self):
    print(self.line(), file=self._stream, flush=True)
    self._lines += 1
    self._dirty = False

  def close(self):
    if self._bar is not None:
      self._bar.close()
    elif not self._disabled and self._dirty:
      self._line()


class StepTrace(_Closes):
  """A jax.profiler trace of the steps first..last (1-based: step n is the n-th update) into `directory`, each
  step annotated with its number, for TensorBoard's profile plugin or Perfetto (docs/profiling.md). `steps`: ()
  for none, or (first, last)."""

  def __init__(self, directory, steps):
    self.directory = directory
    self.first, self.last = tuple(steps) if steps else (None, None)
    self._running = False

  @contextlib.contextmanager
  def step(self, n):
    """Around the update that makes step n."""
    if n == self.first:
      jax.profiler.start_trace(self.directory)
      self._running = True
    if self._running:
      with jax.profiler.StepTraceAnnotation('train', step_num=n):
        yield
    else:
      yield

  def after(self, n, outputs):
    """After step n: once the last traced step's `outputs` are computed, the trace is written."""
    if self._running and n >= self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self):
    if self._running:
      self._running = False
      jax.profiler.stop_trace()
