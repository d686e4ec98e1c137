"""Metrics a run logs: one JSON object per logged step in `metrics.jsonl`, and a progress bar for people."""
import json
import os
import sys

import numpy as np
import tqdm

from training import workdir as workdir_lib


def _plain(v):
  if isinstance(v, (np.generic, np.ndarray)):
    return v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  return v


class MetricsWriter:
  """Writes `metrics.jsonl` in a workdir. `start_step`: lines of later steps are dropped (a resumed run)."""

  def __init__(self, workdir, start_step=None):
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    lines = []
    if start_step is not None and os.path.exists(self.path):
      lines = [line for line, row in zip(*workdir_lib.read_jsonl(self.path)) if row.get('step', 0) <= start_step]
    with open(self.path, 'w') as f:
      f.writelines(lines)

  def write(self, step, **scalars):
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}) + '\n')


class NullWriter:
  """Stands in for MetricsWriter in the processes of a multi-process job other than process 0."""

  def write(self, step, **scalars):
    del step, scalars


def progress(total, desc, disable=False):
  """A tqdm bar on stderr, shown only when stderr is a terminal (logs and CI stay clean)."""
  return tqdm.tqdm(total=total, desc=desc, disable=disable or not sys.stderr.isatty(), leave=False,
                   dynamic_ncols=True)
