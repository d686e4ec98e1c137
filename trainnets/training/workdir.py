"""The workdir a run writes into, and the rules that keep an existing one safe.

A workdir belongs to one experiment and one resolved config, recorded in its `config.json`. Running again with
the same config is allowed (and, for checkpointed trainers, resumes); a workdir whose `config.json` records
another experiment or other values, or a non-empty directory without `config.json`, is refused before anything
is written, so no result is ever overwritten by a different run. One process at a time writes a workdir: it
holds an exclusive lock on the workdir's `.lock` (released by the operating system when the process ends, however
it ends), and a second run on the same workdir stops at once naming the holder. Every file is written to a
temporary name and renamed into place, so an interrupted write never leaves half a file behind, with the
permissions the user's umask gives.
"""
import datetime
import fcntl
import json
import os
import socket
import tempfile

from trainnets import config_keys
from trainnets.errors import WorkdirError
from trainnets.files import append_line
from trainnets.files import write_bytes  # noqa: F401 (re-exported: the workdir's files are written with these)
from trainnets.files import write_json
from trainnets.files import write_npz  # noqa: F401
from trainnets.files import write_text  # noqa: F401

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
LOCK_FILE = '.lock'
# What a workdir may hold before its config.json: the lock, and the log a parallel sweep opens for the run.
BEFORE_CONFIG = frozenset({LOCK_FILE, 'train.log'})
_held = {}  # realpath -> open file descriptor of a lock this process holds (kept open for the process's life)


def flatten(d, prefix=''):
  """{dotted key: value} of a nested dict."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_to_dict(config):
  """A JSON-ready dict of an ml_collections config (tuples become lists)."""
  return json.loads(config.to_json())


def check_usable(workdir, config, extend=False):
  """Raises WorkdirError unless `workdir` is absent, empty, or holds a run of `config` (check_matches: keys that
  say how or where it runs may differ; with `extend`, any key). Writes nothing; returns the changes
  [(key, old, new)]."""
  if not workdir:
    raise WorkdirError('no --workdir given; pass --workdir=DIR, a directory for this run\'s results')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory; pass a directory path')
  if not os.path.isdir(workdir):
    return []
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    changes = check_matches(workdir, config, extend=extend)
    if os.path.exists(os.path.join(workdir, METRICS_FILE)):
      read_jsonl(os.path.join(workdir, METRICS_FILE))  # a resumed run keeps its rows: they must be readable
    return changes
  others = sorted(set(os.listdir(workdir)) - BEFORE_CONFIG)
  if others:
    shown = ', '.join(others[:3]) + (f' and {len(others) - 3} more' if len(others) > 3 else '')
    raise WorkdirError(f'--workdir={workdir} is not empty ({shown}) and has no {CONFIG_FILE}, so it was not '
                       'written by train.py; pass a new or empty --workdir so its files are not overwritten')
  return []


def prepare(workdir, config, extend=False, at_step=0):
  """Creates `workdir` (or checks the existing one) for `config`, takes its lock and writes config.json; raises
  WorkdirError with the fix, before writing anything, if the workdir cannot be used. A run resumed under changed
  keys (check_usable) gets a metrics.jsonl row at `at_step` (the step it resumes from) naming each change, and
  config.json records the new values."""
  check_usable(workdir, config, extend)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-test-', delete=True)
    probe.close()
  except OSError as e:
    raise WorkdirError(f'cannot write to --workdir={workdir} ({e.strerror}); pass a directory you can write '
                       'to') from None
  lock(workdir)
  changes = check_usable(workdir, config, extend)  # again under the lock: another run may have written config.json
  if changes:
    append_line(os.path.join(workdir, METRICS_FILE), json.dumps({
        'step': int(at_step), 'config_changed': {k: {'from': old, 'to': new} for k, old, new in changes},
        'extend': bool(extend), 'time': datetime.datetime.now().isoformat(timespec='seconds')}) + '\n')
  write_json(os.path.join(workdir, CONFIG_FILE), config_to_dict(config))
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)


def lock(workdir):
  """Takes the workdir's lock for the rest of this process's life; a WorkdirError naming the holder (its PID,
  host and start time) if another process has it. Locking twice in one process is allowed."""
  key = os.path.realpath(workdir)
  if key in _held:
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise WorkdirError(f'cannot write {path} ({e.strerror}); pass a --workdir you can write to') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    try:
      holder = json.loads(os.pread(fd, 4096, 0) or b'{}')
    except ValueError:
      holder = {}
    os.close(fd)
    who = (f'process {holder["pid"]} on {holder["host"]} (since {holder["since"]})' if holder.get('pid')
           else 'another process')
    raise WorkdirError(f'--workdir={workdir} is in use by {who}; wait for that run to end or stop it, or pass '
                       'another --workdir') from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                            'since': datetime.datetime.now().isoformat(timespec='seconds')}).encode(), 0)
  _held[key] = fd


def check_matches(workdir, config, sections=None, role='--workdir',
                  fix='pass a new --workdir so its results are not overwritten, or the config it was trained with',
                  extend=False):
  """Raises WorkdirError unless `workdir`'s config.json records `config` (or its `sections`, such as ('model',
  'data') for an ensemble member trained with another seed) in every key that defines the run; keys that only
  say how or where it runs (config_keys.how) may differ, and with `extend` any key may. Returns the differences
  [(key, old, new)]. `role` and `fix` word the error."""
  new = config_to_dict(config)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{workdir} has no {CONFIG_FILE}, so it was not written by train.py; pass a workdir that was')
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    old = None
  if not isinstance(old, dict):
    raise WorkdirError(f'{path} is unreadable or not a JSON object, so the workdir\'s owner is unknown; pass a new '
                       '--workdir') from None
  if old.get('experiment') != new.get('experiment'):
    raise WorkdirError(f'--workdir={workdir} holds results of experiment {old.get("experiment")!r}, not '
                       f'{new.get("experiment")!r}; pass a new --workdir so they are not overwritten')
  a, b = flatten(old), flatten(new)
  a = config_keys.older_as_new(a, b)  # keys added or retired since, as their definitions state
  if sections:
    a, b = ({k: v for k, v in d.items() if k.split('.')[0] in sections} for d in (a, b))
  diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
  defining = [k for k in diff if not config_keys.is_how(k)]
  if defining and not extend:
    shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in defining[:3])
    more = f' and {len(defining) - 3} more' if len(defining) > 3 else ''
    extra = ('; or pass --extend to continue this run under the new values (recorded in metrics.jsonl)'
             if role == '--workdir' else '')
    raise WorkdirError(f'{role}={workdir} holds a run with another config ({shown}{more}); {fix}{extra}')
  return [(k, a.get(k), b.get(k)) for k in diff]


def read_json(path):
  """The JSON object in `path`; a WorkdirError if it is missing or not JSON (a damaged workdir)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise WorkdirError(f'{path} is missing; train again with the same --config and --workdir') from None
  except (OSError, ValueError) as e:
    raise WorkdirError(f'{path} cannot be read ({getattr(e, "strerror", None) or e}); restore it or train again '
                       'into a new --workdir') from None
  if not isinstance(value, dict):
    raise WorkdirError(f'{path} holds a JSON {type(value).__name__}, not an object: it was changed since it was '
                       'written; restore it or train again into a new --workdir')
  return value


def read_jsonl(path):
  """([line, ...], [row, ...]) of a metrics.jsonl; a WorkdirError naming the first line that is not a JSON
  object (a file edited or damaged by hand: resuming over it would lose or misreport the run's history)."""
  lines, rows = [], []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if not isinstance(row, dict):
        raise WorkdirError(f'line {n} of {path} is not a JSON object; repair or delete that line (the run resumes '
                           'from its checkpoint either way), or pass a new --workdir')
      lines.append(line)
      rows.append(row)
  return lines, rows
