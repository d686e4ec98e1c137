"""The workdir a run writes into, and the rules that keep an existing one safe.

A workdir belongs to one experiment and one resolved config, recorded in its `config.json`. Running again with
the same config is allowed (and, for checkpointed trainers, resumes); a workdir whose `config.json` records
another experiment or other values is refused before anything is written, so no result is ever overwritten by a
different run. Every file is written to a temporary name and renamed into place, so an interrupted write never
leaves half a file behind.
"""
import json
import os
import tempfile

from training.errors import WorkdirError

CONFIG_FILE = 'config.json'


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_to_dict(config):
  """A JSON-ready dict of an ml_collections config (tuples become lists)."""
  return json.loads(config.to_json())


def prepare(workdir, config):
  """Creates `workdir` (or checks the existing one) for `config`; raises WorkdirError with the fix."""
  if not workdir:
    raise WorkdirError('no --workdir given; pass --workdir=DIR, a directory for this run\'s results')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory; pass a directory path')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-test-', delete=True)
    probe.close()
  except OSError as e:
    raise WorkdirError(f'cannot write to --workdir={workdir} ({e.strerror}); pass a directory you can write to')
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    check_matches(workdir, config)
  write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)


def check_matches(workdir, config, sections=None):
  """Raises WorkdirError unless `workdir`'s config.json records exactly `config` (or its `sections`, such as
  ('model', 'data') for an ensemble member trained with another seed)."""
  new = config_to_dict(config)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{workdir} has no {CONFIG_FILE}, so it was not written by train.py; pass a workdir that was')
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    raise WorkdirError(f'{path} is unreadable, so the workdir\'s owner is unknown; pass a new --workdir')
  if old.get('experiment') != new.get('experiment'):
    raise WorkdirError(f'--workdir={workdir} holds results of experiment {old.get("experiment")!r}, not '
                       f'{new.get("experiment")!r}; pass a new --workdir so they are not overwritten')
  a, b = _flatten(old), _flatten(new)
  if sections:
    a, b = ({k: v for k, v in d.items() if k.split('.')[0] in sections} for d in (a, b))
  diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
  if diff:
    shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:3])
    more = f' and {len(diff) - 3} more' if len(diff) > 3 else ''
    raise WorkdirError(f'--workdir={workdir} holds a run with another config ({shown}{more}); pass a new '
                       '--workdir so its results are not overwritten, or the config it was trained with')


def write_text(path, text):
  """Writes `text` to `path` atomically (temporary file, then rename)."""
  write_bytes(path, text.encode())


def write_bytes(path, data):
  """Writes `data` to `path` atomically (temporary file, then rename)."""
  d = os.path.dirname(path) or '.'
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path, obj):
  write_text(path, json.dumps(obj, indent=1, sort_keys=False) + '\n')


def read_json(path):
  with open(path) as f:
    return json.load(f)
