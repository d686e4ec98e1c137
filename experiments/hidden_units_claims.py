"""The lecture's claims about hidden units, as data: what the lecture says, which runs of experiments/hidden_units.py
each claim reads, what is measured and the criterion (experiments/claims.py says how an entry is read).

`quote` holds the lecture's words where its slides state the claim in a sentence; where a slide shows it only in
a figure, `quote` is empty and `source` says that the wording is this project's. Solved and not solved are one
statistic read both ways: the median over seeds of the training accuracy against claims.solved_accuracy.
"""
import numpy as np

from experiments import claims
from experiments.claims import Claim
from experiments.claims import Key


def _runs(records, config, select):
  """The records of `select` trained from the config's initialisation (not the all-zero control)."""
  runs = claims.select(records, init=config.model.weight_init, **select)
  if not runs:
    raise ValueError(f'no runs match {select}')
  return runs


def _median(records, key):
  return float(np.median([r[key] for r in records]))


def _zero_loss(runs, config, by=None):
  hit = [r for r in runs if r['solved'] and (by is None or r['epochs'] <= by)]
  return f'{len(hit)}/{len(runs)} seeds reach zero training loss' + (f' by epoch {by}' if by else '')


def at_epoch(records, config, select):
  """The median training accuracy at epoch claims.at_epoch."""
  runs, at = _runs(records, config, select), config.claims.at_epoch
  value = _median(runs, f'train_accuracy_epoch{at}')
  solved = [r['epochs'] for r in runs if r['solved']]
  return value, (f'median training accuracy at epoch {at}: {value:.3f} (final: {_median(runs, "train_accuracy"):.3f});'
                 f' {_zero_loss(runs, config, at)}; median epoch reaching zero loss: '
                 + (f'{np.median(solved):.0f}' if len(solved) * 2 > len(runs) else 'never, for most seeds'))


def final(records, config, select):
  """The median final training accuracy."""
  runs = _runs(records, config, select)
  value = _median(runs, 'train_accuracy')
  return value, (f'final training accuracy: median {value:.3f}, best {max(r["train_accuracy"] for r in runs):.3f};'
                 f' {_zero_loss(runs, config)}')


def kendall(widths, values):
  """Kendall's tau over pairs of widths: (rising pairs - falling pairs) / untied pairs; None if all tie."""
  up = down = 0
  for i in range(len(widths)):
    for j in range(i + 1, len(widths)):
      d = (values[j] - values[i]) * (widths[j] - widths[i])
      up, down = up + (d > 0), down + (d < 0)
  return (up - down) / (up + down) if up + down else None


def width_trend(key_of):
  """A measure: per task and depth, Kendall's tau between width and the median of `key_of(config)` over seeds;
  its value is the smallest tau (where every width is at 1.000 there is nothing to rise to and it is left out;
  where every width ties below 1 the tau is 0). Every fall from a width to the next wider one is listed."""

  def measure(records, config, select):
    key, widths = key_of(config), sorted(config.model.hidden_units)
    taus, parts, dips = [], [], []
    for depth in config.model.depths:
      per_task = []
      for task in config.data.tasks:
        med = [_median(_runs(records, config, {**select, 'task': task, 'depth': depth, 'hidden_units': w}), key)
               for w in widths]
        if min(med) >= 1.0:
          per_task.append(f'{task} all 1.000')
          continue
        tau = kendall(widths, med)
        tau = 0.0 if tau is None else tau
        taus.append(tau)
        per_task.append(f'{task} {tau:+.2f}')
        dips += [f'depth {depth} {task} {widths[i]} -> {widths[i + 1]} units ({med[i]:.3f} -> {med[i + 1]:.3f})'
                 for i in range(len(widths) - 1) if med[i + 1] < med[i]]
      parts.append(f'depth {depth}: ' + ', '.join(per_task))
    value = min(taus) if taus else 1.0
    return value, ('Kendall tau of width against median accuracy: ' + '; '.join(parts)
                   + ('; falls: ' + '; '.join(dips) if dips else '; no falls'))

  return measure


def linear(records, config, select):
  """The best final training accuracy of the single-layer net over seeds, on the task where it is highest."""
  best = {t: max(r['train_accuracy'] for r in claims.select(records, task=t, **select)) for t in config.data.tasks}
  return max(best.values()), 'best final training accuracy over seeds: ' + '; '.join(
      f'{t} {a:.3f}' for t, a in best.items())


def zero_init(records, config, select):
  """The largest change of any entry of W or V over the all-zero-initialised nets."""
  zero = claims.select(records, **select)
  moved = max(r['weights_moved'] for r in zero)
  finals = '; '.join(f'{t} {_median(claims.select(zero, task=t), "train_accuracy"):.3f}'
                     for t in sorted({r['task'] for r in zero}))
  return moved, (f'largest change of any W or V entry: {moved:.1e}; median final training accuracy: {finals} '
                 '(the output offset V0 still moves, so the prediction can change sign)')


def parameter_growth(records, config, select):
  """Per depth, p(m) = a m^2 + b m + c fitted exactly to the counted parameters over the widths run; the value is
  the smallest share of a m^2 in p at the widest width over depths >= 2 (a majority: the m^2 term dominates)."""
  widths = sorted(config.model.hidden_units)
  shares, parts = [], []
  for depth in config.model.depths:
    counts = [_runs(records, config, {**select, 'depth': depth, 'hidden_units': w})[0]['num_params'] for w in widths]
    a, b, c = np.round(np.polyfit(widths, counts, 2), 6) + 0.0
    exponent = np.log(counts[-1] / counts[0]) / np.log(widths[-1] / widths[0])
    share = a * widths[-1] ** 2 / counts[-1]
    if depth >= 2:
      shares.append(float(share))
    parts.append(f'depth {depth}: {counts[0]} -> {counts[-1]} = {a:g}m^2 + {b:g}m + {c:g}, exponent over '
                 f'{widths[0]}-{widths[-1]} units {exponent:.2f}, m^2 share at {widths[-1]} units {share:.2f}')
  return min(shares), '; '.join(parts) + ' (at depth 1 the count is linear in the units)'


CLAIMS = (
    Claim(
        id='easy_few_units',
        says='{c.claims.few_units} {c.model.activation} hidden units solve {c.claims.easy_task} after about '
             '{c.claims.at_epoch} epochs',
        quote='',
        source='the lecture\'s first example (2 hidden units on a task they can separate), shown in figures; '
               'wording ours',
        select={'task': Key('claims.easy_task'), 'depth': 1, 'hidden_units': Key('claims.few_units')},
        quantity='median training accuracy at epoch {c.claims.at_epoch}',
        measure=at_epoch, criterion=('>=', Key('claims.solved_accuracy'))),
    Claim(
        id='hard_few_units',
        says='on {c.claims.hard_task}, SGD does not find a solution with {c.claims.few_units} {c.model.activation} '
             'hidden units (what SGD finds, not what the net can represent)',
        quote='2 hidden units can no longer solve this task',
        source='the lecture, on its second, harder task',
        select={'task': Key('claims.hard_task'), 'depth': 1, 'hidden_units': Key('claims.few_units')},
        quantity='median final training accuracy',
        measure=final, criterion=('<', Key('claims.solved_accuracy'))),
    Claim(
        id='hard_many_units',
        says='{c.claims.many_units} {c.model.activation} hidden units are arranged sufficiently for '
             '{c.claims.hard_task} after about {c.claims.at_epoch} epochs',
        quote='10 Hidden Units ... After ~10 epochs the hidden units are arranged in a manner sufficient for the '
              'task (but not otherwise perfect)',
        source='the lecture, on the task that 2 hidden units cannot solve',
        select={'task': Key('claims.hard_task'), 'depth': 1, 'hidden_units': Key('claims.many_units')},
        quantity='median training accuracy at epoch {c.claims.at_epoch}',
        measure=at_epoch, criterion=('>=', Key('claims.solved_accuracy'))),
    Claim(
        id='more_units_fit_more_easily',
        says='more hidden units fit the data more easily: at every depth and on every task, accuracy after about '
             '{c.claims.at_epoch} epochs rises with the width',
        quote='More hidden units ... fit the data more easily',
        source='the lecture; "more easily" read as the training accuracy reached after about 10 epochs',
        select={},
        quantity='smallest Kendall tau (width against median training accuracy at epoch {c.claims.at_epoch}) '
                 'over tasks and depths',
        measure=width_trend(lambda c: f'train_accuracy_epoch{c.claims.at_epoch}'), criterion=('>', 0.0),
        applies=lambda c: len(c.model.hidden_units) >= 2),
    Claim(
        id='more_units_more_powerful',
        says='more hidden units give a more powerful decision boundary: at every depth and on every task, the '
             'final accuracy rises with the width',
        quote='',
        source='the lecture\'s figures of growing nets; wording ours',
        select={},
        quantity='smallest Kendall tau (width against median final training accuracy) over tasks and depths',
        measure=width_trend(lambda c: 'train_accuracy'), criterion=('>', 0.0),
        applies=lambda c: len(c.model.hidden_units) >= 2),
    Claim(
        id='single_layer_linear',
        says='a single layer gives a linear decision surface, which cannot fit these tasks',
        quote='',
        source='the lecture\'s starting point (a linear classifier); wording ours',
        select={'depth': 0},
        quantity='best final training accuracy over seeds and tasks',
        measure=linear, criterion=('<', 1.0),
        applies=lambda c: bool(c.model.include_linear)),
    Claim(
        id='zero_init_stuck',
        says='with all weights zero, the updates leave W and V unchanged (training is stuck)',
        quote='',
        source='the lecture\'s warning about initialising every weight to zero; wording ours',
        select={'init': 'zeros'},
        quantity='largest change of any W or V entry',
        measure=zero_init, criterion=('==', 0.0),
        applies=lambda c: bool(c.claims.zero_init or c.model.weight_init == 'zeros')),
    Claim(
        id='parameters_grow_quadratically',
        says='the parameters grow with (units per layer)^2 in nets of two or more hidden layers',
        quote='',
        source='the lecture\'s remark on the cost of wider layers; wording ours',
        select={},
        quantity='smallest share of the m^2 term in the parameter count at the widest width, over depths >= 2',
        measure=parameter_growth, criterion=('>', 0.5),
        applies=lambda c: len(c.model.hidden_units) >= 3 and max(c.model.depths) >= 2),
)
