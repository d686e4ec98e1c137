"""Atomic file writes that every layer may use (results, markers beside datasets, caches, prepared data).

A file is written to a temporary name in its directory and renamed into place, so a reader (or a run killed
half-way) never sees half a file; it gets the mode the user's umask gives a new file, not mkstemp's 0600.
"""
import io
import json
import os
import tempfile

import numpy as np

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_bytes(path, data):
  """Writes `data` to `path` atomically (temporary file, then rename), making its directory if needed."""
  d = os.path.dirname(path) or '.'
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp-')
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from collaborators
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
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


def write_npz(path, compressed=False, **arrays):
  """Writes `arrays` as an .npz to `path` atomically."""
  write_bytes(path, npz_bytes(compressed, **arrays))
