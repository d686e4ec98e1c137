"""What a run logs: one writer for `metrics.jsonl` (a JSON object per logged step) and, where asked, TensorBoard
events in WORKDIR/tensorboard; and a progress bar for people."""
import json
import os
import sys

import numpy as np
import tqdm

import tf_host
from training import workdir as workdir_lib


def _plain(v):
  if isinstance(v, (np.generic, np.ndarray)):
    return v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  return v


def tensorboard_tag(key):
  """The TensorBoard tag of a metrics.jsonl key: 'train_loss' -> 'train/loss', 'test_top5_error' ->
  'test/top5_error'; other keys as they are."""
  for prefix in ('train_', 'test_'):
    if key.startswith(prefix):
      return f'{prefix[:-1]}/{key[len(prefix):]}'
  return key


class MetricsWriter:
  """Writes `metrics.jsonl` in a workdir, and with `tensorboard` the same scalars as TensorBoard events (their
  tags from tensorboard_tag). `start_step`: lines of later steps are dropped (a resumed run)."""

  def __init__(self, workdir, start_step=None, tensorboard=False):
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    lines = []
    if start_step is not None and os.path.exists(self.path):
      lines = [line for line, row in zip(*workdir_lib.read_jsonl(self.path)) if row.get('step', 0) <= start_step]
    with open(self.path, 'w') as f:
      f.writelines(lines)
    self._tf, self._events = None, None
    if tensorboard:
      self._tf = tf_host.tf()  # imported only when asked for
      self._events = self._tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step, **scalars):
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}) + '\n')
    if self._events is not None:
      with self._events.as_default(step=int(step)):
        for k, v in scalars.items():
          if k != 'epoch' and isinstance(_plain(v), (int, float)):
            self._tf.summary.scalar(tensorboard_tag(k), v)

  def flush(self):
    if self._events is not None:
      self._events.flush()


class NullWriter:
  """Stands in for MetricsWriter in the processes of a multi-process job other than process 0."""

  def write(self, step, **scalars):
    del step, scalars

  def flush(self):
    pass


def progress(total, desc, disable=False):
  """A tqdm bar on stderr, shown only when stderr is a terminal (logs and CI stay clean)."""
  return tqdm.tqdm(total=total, desc=desc, disable=disable or not sys.stderr.isatty(), leave=False,
                   dynamic_ncols=True)
