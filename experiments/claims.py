"""Scientific claims as data: each claim an entry that quotes its source, selects runs, names what is measured and
the criterion that decides it. An experiment lists its entries beside its config (experiments/<name>_claims.py);
reports render the verdicts and sweeps count them by id, so no claim lives in prose or in a metric name.

An entry's text fields are templates over the config that ran (`{c.claims.few_units}`), and its selection and
threshold may name config keys (Key('claims.easy_task')), so a claim always says what its run measured. Nothing
here imports JAX: verdicts are a pure function of (config, records), testable on made-up records.
"""
import dataclasses
import operator
from typing import Any
from typing import Callable


def select(records, **kw):
  """The records whose fields equal kw, in their order. The first selection by a set of fields indexes the
  records by those fields, so the hundreds of selections of a report cost one pass each, not one scan each."""
  fields = tuple(sorted(kw))
  cached = _INDEXES.get((id(records), fields))
  if cached is None or cached[0] is not records:
    if len(_INDEXES) >= 64:  # a long process (a notebook, many reports) keeps only the latest indexes
      _INDEXES.clear()
    table = {}
    for r in records:
      table.setdefault(tuple(r[f] for f in fields), []).append(r)
    cached = _INDEXES[(id(records), fields)] = (records, table)
  return list(cached[1].get(tuple(kw[f] for f in fields), ()))


_INDEXES = {}  # (id(records), fields) -> (records, {values: records}); the records kept so their id stays theirs

OPS = {'>=': operator.ge, '>': operator.gt, '<': operator.lt, '<=': operator.le, '==': operator.eq}


@dataclasses.dataclass(frozen=True)
class Key:
  """A value read from the config that ran, e.g. Key('claims.easy_task')."""
  path: str

  def of(self, config):
    value = config
    for part in self.path.split('.'):
      value = value[part]
    return value


def resolve(value, config):
  """`value` with a Key replaced by the config's value (tuples and dicts resolved item by item)."""
  if isinstance(value, Key):
    return value.of(config)
  if isinstance(value, dict):
    return {k: resolve(v, config) for k, v in value.items()}
  if isinstance(value, tuple):
    return tuple(resolve(v, config) for v in value)
  return value


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim. `measure(records, config, select)` returns (value, what was measured in words); the claim holds
  where `value <op> threshold` for criterion (op, threshold)."""
  id: str  # stable: sweeps and tests name claims by it
  says: str  # the claim as this run tests it: a template over the config ({c.KEY})
  quote: str  # the source's own words, verbatim ('' where the source states it only in a figure)
  source: str  # where the words are from, and how this entry reads them
  select: dict  # which runs: record field -> value or Key
  quantity: str  # what is measured, in words (a template)
  measure: Callable[..., tuple]
  criterion: tuple  # (op, threshold): op one of OPS, threshold a number or Key
  applies: Callable[[Any], bool] = lambda config: True  # whether a run of this config makes the claim

  def verdict(self, records, config):
    """The claim as it came out: a dict of plain values (results.json keeps it as is)."""
    select = resolve(self.select, config)
    op, threshold = self.criterion[0], resolve(self.criterion[1], config)
    value, measured = self.measure(records, config, select)
    return {'id': self.id, 'claim': self.says.format(c=config), 'quote': self.quote, 'source': self.source,
            'select': select, 'quantity': self.quantity.format(c=config), 'value': value,
            'criterion': f'{self.quantity.format(c=config)} {op} {threshold:g}', 'measured': measured,
            'holds': bool(OPS[op](value, threshold))}


def verdicts(claims, records, config):
  """The verdicts of the claims a run of `config` makes, in the entries' order."""
  return [c.verdict(records, config) for c in claims if c.applies(config)]


def made_by(claims, config):
  """The ids of the claims a run of `config` makes, known before it runs (the sweep checks --metric with them)."""
  return [c.id for c in claims if c.applies(config)]
