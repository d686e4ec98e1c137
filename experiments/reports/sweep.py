"""A sweep's report: sweep.csv (one row per run), sweep.md (mean and spread per setting), sweep.png, and the metric
against a numeric axis where the grid has one."""
import csv
import os

from trainnets import files
from trainnets.training import workdir as workdir_lib


def summarise(table, workdir, metric, report):
  """Writes sweep.csv (one row per run), sweep.md (mean and spread per setting) and sweep.png; `report`, the
  experiment's report module, turns each run's results.json into figures (sweep_figures) and may add lines to
  sweep.md (sweep_markdown)."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  rows, results = [], []
  for r in table:
    res = workdir_lib.read_json(os.path.join(r['workdir'], 'results.json'))
    if hasattr(report, 'current'):  # what is derived from the run's records, as the code derives it today
      res = report.current(res, r['config'])
    results.append(res)
    rows.append({'name': r['name'], 'seed': r['seed'], **{f'config.{k}': v for k, v in r['overrides'].items()},
                 **report.sweep_figures(res)})
  keys = list(dict.fromkeys(k for row in rows for k in row))
  with open(os.path.join(workdir, 'sweep.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  names = list(dict.fromkeys(r['name'] for r in rows))
  values = {n: [r[metric] for r in rows if r['name'] == n] for n in names}
  lines = [f'| setting | overrides | {metric} (mean) | min | max | seeds | wall time (s) |',
           '|---|---|---|---|---|---|---|']
  for n in names:
    over = next(r['overrides'] for r in table if r['name'] == n)
    walls = [r.get('wall_time_s', float('nan')) for r in rows if r['name'] == n]
    v = values[n]
    lines.append(f'| {n} | {", ".join(f"`{k}={x}`" for k, x in over.items()) or "(defaults)"} | '
                 f'{number(np.mean(v))} | {number(min(v))} | {number(max(v))} | {len(v)} | {np.mean(walls):.0f} |')
  if hasattr(report, 'sweep_markdown'):
    lines += report.sweep_markdown(table, results)
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  # Points, not bars: a bar's length reads as the value, and an axis zoomed to show 0.01 differences would make
  # them look large. Each run is a dot, each setting's mean a line with its value.
  fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names) + 1), 3.6))
  means = [np.mean(values[n]) for n in names]
  for i, n in enumerate(names):
    ax.plot([i] * len(values[n]), values[n], 'o', color='#3182bd', ms=4, alpha=0.7)
    ax.plot([i - 0.3, i + 0.3], [means[i]] * 2, 'k-', lw=1.5)
    ax.annotate(number(means[i]), (i + 0.32, means[i]), fontsize=7, va='center')
  seeds = max(len(v) for v in values.values())
  ax.set(xticks=range(len(names)), ylabel=metric, xlim=(-0.6, len(names) - 0.2),
         title=f'{metric}: {"each dot a seed, the line their mean" if seeds > 1 else "one seed per setting"}')
  ax.title.set_fontsize(9)
  if all(float(x).is_integer() for v in values.values() for x in v):  # counts: whole-number ticks
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
  files.write_figure(os.path.join(workdir, 'sweep.png'), fig, dpi=110, bbox_inches='tight')
  plt.close(fig)
  axis = numeric_axis(table)
  if axis:
    xs = sorted({float(run_value(r, axis)) for r in table})
    per_x = [[r[metric] for r, t in zip(rows, table) if float(run_value(t, axis)) == x] for x in xs]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    seeds = max(len(v) for v in per_x)
    ax.plot(xs, [np.mean(v) for v in per_x], 'o-', label=f'mean over {seeds} seeds' if seeds > 1 else 'one seed')
    if seeds > 1:  # a band needs more than one run
      ax.fill_between(xs, [min(v) for v in per_x], [max(v) for v in per_x], alpha=0.25, label='min to max')
    if min(xs) > 0 and max(xs) / min(xs) >= 3:  # step sizes, scales: equal ratios at equal distances
      ax.set_xscale('log')
      ax.set_xticks(xs, [f'{x:g}' for x in xs])
      ax.minorticks_off()
    ax.set(xlabel=axis, ylabel=metric)
    ax.legend(fontsize=8)
    files.write_figure(os.path.join(workdir, f'sweep_{axis.split(".")[-1]}.png'), fig, dpi=110, bbox_inches='tight')
    plt.close(fig)
  return '\n'.join(lines)


def number(x):
  """A table's number: whole numbers (claim counts) without decimals, others to 4 places."""
  return f'{x:.0f}' if float(x).is_integer() else f'{x:.4f}'


def run_value(run, key):
  """The value of the dotted `key` in a sweep run: its override, or else its resolved config's (the default)."""
  if key in run['overrides']:
    return run['overrides'][key]
  value = run['config']
  for part in key.split('.'):
    value = value[part]
  return value


def numeric_axis(table):
  """The one overridden key whose values are all numbers and that takes several values, if there is one (a run
  without the override counts with its config's value)."""
  keys = {k for r in table for k in r['overrides']}
  if len(keys) != 1:
    return None
  key = keys.pop()
  try:
    values = {float(run_value(r, key)) for r in table}
  except (TypeError, ValueError):
    return None
  return key if len(values) > 1 else None
