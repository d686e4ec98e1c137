"""What a config key says about workdirs: what older ones ran as, and whether it defines the run; stated once,
beside the key.

A workdir resumes and evaluates only under a config that defines the same run (trainnets/training/workdir.py compares
its config.json with the new config, key by key). Configs gain and lose keys over time, so an older workdir's
config.json lacks some keys and holds some that are gone. The rules:
  - a key the older config lacks ran as its `before` value, where the config that defines the key states one
    (`before(config, 'data.num_validation', 0)` on the line after it), and otherwise as the config file's default
    (its value before any --config.KEY override). So a new key whose default reproduces older runs is one line;
    a key whose default computes something new states, beside it, what older runs computed.
  - a key the new config lacks (retired) matches when the older config held the value that the current code
    reproduces, stated with `retired(config, key, value)` where the key used to be.
  - a key stated with `how(config, key)` only says how or where a run runs (a path, a speed kernel, logging): a
    workdir resumes under another value of it, and records the change; every other key defines the run, and
    a workdir resumes under another value of it only with train.py's --extend.
Values are kept as JSON holds them (tuples as lists), as config.json does. Imports nothing of the project:
configs stay light to import.
"""
import json

_BEFORE = {}  # dotted key -> the value runs made before the key had, or a function of their flattened config
_RETIRED = {}  # dotted key -> the value of a retired key that the current code reproduces
_DEFAULTS = {}  # dotted key -> the config file's default, recorded by the entry points (record_defaults)
_HOW = set()  # dotted keys that say how or where a run runs, not what it computes


def _as_json(value):
  return json.loads(json.dumps(value))


def _has(config, key):
  node = config
  for part in key.split('.'):
    if part not in node:
      return False
    node = node[part]
  return True


def before(config, key, value):
  """Records that workdirs made before `key` existed ran as `value` (or as value(old flattened config)). A
  KeyError if `config` has no such key (a misspelt statement fails where the config is built)."""
  if not _has(config, key):
    raise KeyError(f'{key} is not a key of this config: state before() after the key is set')
  value = value if callable(value) else _as_json(value)
  known = _BEFORE.setdefault(key, value)
  if known is not value and not callable(value) and known != value:
    raise ValueError(f'{key} states two values for runs made before it: {known!r} and {value!r}')


def retired(config, key, value):
  """Records that a workdir whose config holds the retired `key` at `value` ran as the current code does."""
  if _has(config, key):
    raise KeyError(f'{key} is still a key of this config; retire it by removing it')
  _RETIRED[key] = _as_json(value)


def how(config, *keys):
  """Records that `keys` say only how or where a run runs (paths, speed kernels, logging, profiling, evaluation
  batches and views, checkpoint cadence), not what it trains: a workdir resumes under other values of them, each
  change recorded in its metrics. Every other key defines the run. A KeyError for a key `config` lacks."""
  for key in keys:
    if not _has(config, key):
      raise KeyError(f'{key} is not a key of this config: state how() after the key is set')
    _HOW.add(key)


def is_how(key):
  """Whether `key` only says how or where a run runs (how)."""
  return key in _HOW


def record_defaults(flat_defaults):
  """Records the config file's default of every key ({dotted key: value}, as JSON holds it)."""
  _DEFAULTS.update(flat_defaults)


def older_as_new(old, new):
  """The flattened older config `old` ({dotted key: value}) as the keys of `new` read it: keys `new` added take
  their before value (or the recorded default), retired keys at their reproduced value are dropped."""
  out = {k: v for k, v in old.items() if not (k not in new and k in _RETIRED and _RETIRED[k] == v)}
  for k in new.keys() - old.keys():
    if k in _BEFORE:
      out[k] = _BEFORE[k](old) if callable(_BEFORE[k]) else _BEFORE[k]
    elif k in _DEFAULTS:
      out[k] = _DEFAULTS[k]
  return out
