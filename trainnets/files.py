"""Atomic file writes that every layer may use (results, markers beside datasets, caches, prepared data).

A file is written to a temporary name in its directory and renamed into place, so a reader (or a run killed
half-way) never sees half a file; it gets the mode the user's umask gives a new file, not mkstemp's 0600. A
write that fails (a full disk) leaves the previous file as it was and raises WriteError, one line for the user.
"""
import io
import json
import os
import tempfile

import numpy as np

from trainnets.errors import one_line
from trainnets.errors import WriteError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_bytes(path, data):
  """Writes `data` to `path` atomically (temporary file, then rename), making its directory if needed."""
  d = os.path.dirname(path) or '.'
  tmp = None
  try:
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp-')
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from collaborators
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException as e:
    if tmp and os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise WriteError(f'could not write {path} ({one_line(e)}); the files written before it are kept: free space '
                       'or fix the directory, then run the same command again') from None
    raise


def write_text(path, text):
  """Writes `text` to `path` atomically."""
  write_bytes(path, text.encode())


def write_json(path, obj):
  """Writes `obj` as indented JSON to `path` atomically."""
  write_text(path, json.dumps(obj, indent=1, sort_keys=False) + '\n')


def npz_bytes(compressed=False, **arrays):
  """The bytes of an .npz holding `arrays` (what np.savez, or np.savez_compressed, writes)."""
  buf = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buf, **arrays)
  return buf.getvalue()


def append_line(path, line):
  """Appends one line to `path` (a log such as metrics.jsonl); a WriteError if it cannot."""
  append_bytes(path, line.encode())


def append_bytes(path, data):
  """Appends `data` to `path` (a log, an event file), the file closed again at once; a WriteError if it cannot."""
  try:
    with open(path, 'ab') as f:
      f.write(data)
  except OSError as e:
    raise WriteError(f'could not write {path} ({one_line(e)}); free space or fix the directory, then run the same '
                     'command again') from None


def write_figure(path, fig, **savefig_kw):
  """Saves a matplotlib figure to `path` atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format=os.path.splitext(path)[1][1:] or 'png', **savefig_kw)
  write_bytes(path, buf.getvalue())


def write_npz(path, compressed=False, **arrays):
  """Writes `arrays` as an .npz to `path` atomically."""
  write_bytes(path, npz_bytes(compressed, **arrays))
