"""The hidden-units sweep's report: the lecture's claims with measured numbers, results.md, figures, summaries.

Nothing here trains: `render` reads a finished workdir (results.json's records, and the parameters, snapshots
and curves trainnets/training/hidden_units.py saved) and derives everything else from them and the config; the
figures are drawn from the numbers computed here by FIGURES, here or in worker processes (drawing.py).
"""
import os

import jax
import numpy as np

from experiments import claims as claims_lib
from experiments import hidden_units_claims
from experiments.reports import drawing
from nets import mlp
from trainnets.training import hidden_units as trainer
from trainnets.training import workdir as workdir_lib

FIGURES = 'experiments.reports.hidden_units_figures'  # what draws the figures: numpy and matplotlib only
GRID = np.linspace(-1.1, 1.1, 161)  # the decision maps' axes
_GRID_POINTS = np.stack([a.ravel() for a in np.meshgrid(GRID, GRID)], 1).astype(np.float32)  # [161 * 161, 2]


def _model_params(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _median(recs, key):
  return float(np.median([r[key] for r in recs]))


def counted_params(depth, width):
  """Parameters of a real (unpadded) net: the count of the arrays its init makes (tests/test_nets.py)."""
  return mlp.num_params((2,) + (width,) * depth + (1,))


def render(config, workdir, draw=None):
  """Writes the figures, claims.json (the lecture's claims, judged) and results.md of a finished workdir; returns
  results.json with the claims and figure names added. `draw` draws the figures (drawing.Here() if None)."""
  return start_render(config, workdir, draw)()


def start_render(config, workdir, draw=None, trained=None):
  """render up to its figures, which `draw` may still be drawing elsewhere (a drawing.Pool); returns the function
  that waits for them, then writes claims.json and results.md and returns the results. `trained`: the run's
  (runs, datasets) as trainer.load_runs reads them, handed over by the trainer before it writes them, so that the
  figures are drawn while the files are written; results.json is read when the function is called."""
  draw = draw or drawing.Here()
  path = os.path.join(workdir, 'results.json')
  saved = None if trained else workdir_lib.read_json(path)  # a finished workdir's, read first: damage costs no work
  runs, datasets = trained or trainer.load_runs(config, workdir)
  names, drawn = [], []
  for name, function, numbers in figures(runs, datasets, config):  # each handed over as soon as it is computed
    drawn.append(draw.draw(FIGURES, function, os.path.join(workdir, 'figures', name), **numbers))
    names.append(name)

  def finish():
    results = {**current(saved or workdir_lib.read_json(path), config), 'figures': names}
    for figure in drawn:
      figure.result()
    workdir_lib.write_json(os.path.join(workdir, 'claims.json'), {'claims': results['claims']})
    workdir_lib.write_text(os.path.join(workdir, 'results.md'), markdown(config, results))
    return results

  return finish


def current(results, config):
  """results with the claims derived again from its records: claims are a pure function of (config, records), so
  a run made under older claim definitions (results.json without claim ids) is read as the code reads it now."""
  return {**results, 'claims': claims_lib.verdicts(hidden_units_claims.CLAIMS, results['records'], config)}


def run_setting(config):
  """What every run of `config` shares, in words: the nets, their initialisation and how they were trained."""
  t = config.train
  sgd = ('per-example SGD (a random example each step)' if t.batch_size == 1 and t.sampling == 'uniform' else
         f'SGD on batches of {t.batch_size} ({t.sampling} sampling)')
  if t.momentum:
    sgd += f', momentum {t.momentum:g}'
  offsets = 'zero offsets' if config.model.offset_init == 'zeros' else f'N(0, {config.model.offset_std:g}^2) offsets'
  init = config.model.weight_init + (f' ({config.model.weight_std:g})' if config.model.weight_init == 'normal' else '')
  return (f'{config.model.activation} units, {init} weight init, {offsets}; {sgd} on the {t.loss} loss, '
          f'eta_0 {t.learning_rate:g} (depth >= 2: {t.deep_learning_rate:g}), {t.lr_schedule} schedule, '
          f'{t.epochs} epochs, {config.data.num_train} training points, {config.num_seeds} seeds')


def _selection(select):
  """A claim's selection of runs in words."""
  names = {'hidden_units': 'units', 'depth': 'depth', 'task': 'task', 'init': 'init'}
  return ', '.join(f'{names.get(k, k)} {v}' for k, v in select.items()) or 'every task, depth and width'


def _train_of(datasets, task, data_seed=None):
  """The training set (x, y) of `task`: the shared one, or model seed's own (data.seed_per_model); the first
  drawn where data_seed is None and each seed has its own."""
  key = task if data_seed is None else (task, data_seed)
  if key not in datasets:
    key = next(k for k in sorted(datasets, key=repr) if k == task or (isinstance(k, tuple) and k[0] == task))
  return tuple(np.asarray(a) for a in datasets[key][0])


def _grid_row(recs, config, task, depth, cell):
  """The markdown row of `task` and `depth`: per width, cell(the records of its seeds), the config's init."""
  cells = [cell(claims_lib.select(recs, task=task, depth=depth, hidden_units=w, init=config.model.weight_init))
           for w in sorted(config.model.hidden_units)]
  return f'| {task} | {depth} | ' + ' | '.join(cells) + ' |'


def markdown(config, results):
  """results.md: the claims table, accuracy by task/depth/width, parameter counts, and the figures."""
  recs = results['records']
  lines = ['# Hidden units: measured results', '',
           f'Command: `{results.get("command", "(not recorded)")}`  ',
           f'Machine: {results.get("machine", "(not recorded)")}  ',
           f'Devices: {", ".join(results["devices"])}; {results["num_models"]} models; training '
           f'{results["train_time_s"]} s, in the trainer {results["wall_time_s"]} s (compilation included; start-up '
           'and this report are not counted).', '',
           f'## The lecture\'s claims ({config.num_seeds} seeds per setting)', '',
           f'Every claim reads runs of: {run_setting(config)}. The step sizes are this project\'s choice: the '
           'lecture writes eta and eta_k without values. Where the lecture states a claim in words they are quoted; '
           'otherwise the wording is this project\'s (experiments/hidden_units_claims.py says where each is from).',
           '', '| claim | the lecture\'s words | runs | measured | criterion | holds |', '|---|---|---|---|---|---|']
  for c in results['claims']:
    quote = f'"{c["quote"]}"' if c.get('quote') else '(shown in figures)'
    lines.append(f'| {c["claim"]} | {quote} | {_selection(c.get("select", {}))} | {c["measured"]} | '
                 f'{c["criterion"]} | {"yes" if c["holds"] else "**no**"} |')
  widths = sorted(config.model.hidden_units)
  lines += ['', f'## Final training accuracy, median over seeds (test accuracy in brackets), '
                f'{config.model.weight_init} init', '',
            '| task | depth | ' + ' | '.join(f'{w} units' for w in widths) + ' |',
            '|---|---|' + '---|' * len(widths)]
  for t in config.data.tasks:
    lin = claims_lib.select(recs, task=t, depth=0)
    if lin:
      lines.append(f'| {t} | 0 (linear) | {_median(lin, "train_accuracy"):.3f} '
                   f'({_median(lin, "test_accuracy"):.3f}) |' + ' |' * (len(widths) - 1))
    lines += [_grid_row(recs, config, t, d, lambda s: f'{_median(s, "train_accuracy"):.3f} '
                                                    f'({_median(s, "test_accuracy"):.3f})')
              for d in config.model.depths]
  varies = ('the initial weights, the order of the examples and the data set itself (data.seed_per_model: each '
            'seed draws its own training and test points)') if config.data.seed_per_model else (
      f'the initial weights and the order of the examples; every seed trains on the same data set (data seed '
      f'{config.data.seed}; data.seed_per_model=True gives each seed its own)')
  lines += ['', f'## Spread over the {config.num_seeds} seeds: final training accuracy, lowest - highest', '',
            f'The seeds vary {varies}.', '',
            '| task | depth | ' + ' | '.join(f'{w} units' for w in widths) + ' |', '|---|---|' + '---|' * len(widths)]
  spread = lambda s: f'{min(r["train_accuracy"] for r in s):.3f} - {max(r["train_accuracy"] for r in s):.3f}'
  lines += [_grid_row(recs, config, t, d, spread) for t in config.data.tasks for d in config.model.depths]
  lines += ['', '## Parameters per net (counted from the initialised arrays)', '',
            '| depth | ' + ' | '.join(f'{w} units' for w in widths) + ' |', '|---|' + '---|' * len(widths)]
  for d in config.model.depths:
    lines.append(f'| {d} | ' + ' | '.join(str(counted_params(d, w)) for w in widths) + ' |')
  lines += ['', '## Figures', '']
  for f in results['figures']:
    lines.append(f'![{f}](figures/{f})')
  return '\n'.join(lines) + '\n'


def sweep_metric(config):
  """The default --metric: how many of the lecture's claims hold."""
  del config
  return 'claims_holding'


def _setting_suffixes(config):
  """The per-setting suffix (task_d<depth>_w<width>) of every depth >= 1 setting of the grid, in the config's order."""
  return [f'{t}_d{d}_w{w}' for t in config.data.tasks for d in config.model.depths for w in config.model.hidden_units]


def sweep_metrics(config):
  """The names sweep_figures gives for runs of `config`, known before any run: claims_holding, claim_<id> (1 where
  that claim holds; the ids of experiments/hidden_units_claims.py), and per task, depth and width the median and
  spread (highest minus lowest) over the run's seeds of the final training and test accuracy, e.g.
  train_accuracy_median_stripes_d1_w2."""
  names = ['claims_holding', *(f'claim_{i}' for i in claims_lib.made_by(hidden_units_claims.CLAIMS, config)),
           'num_models', 'train_time_s', 'wall_time_s']
  for suffix in _setting_suffixes(config):
    names += [f'{split}_accuracy_{stat}_{suffix}' for split in ('train', 'test') for stat in ('median', 'spread')]
  return tuple(names)


def describe_metrics(config):
  """The metric names of sweep_metrics in families, for one line."""
  ids = claims_lib.made_by(hidden_units_claims.CLAIMS, config)
  return (f'claims_holding, num_models, train_time_s, wall_time_s, claim_<id> for id in {"/".join(ids)}, '
          f'{{train,test}}_accuracy_{{median,spread}}_<task>_d<depth>_w<width> for task in '
          f'{"/".join(config.data.tasks)}, depth in {"/".join(map(str, config.model.depths))}, width in '
          f'{"/".join(map(str, config.model.hidden_units))}')


def sweep_figures(results):
  """{name: number} of one run for a sweep's table (the names sweep_metrics lists)."""
  claims_ = results['claims']
  out = {'claims_holding': sum(c['holds'] for c in claims_), **{f'claim_{c["id"]}': int(c['holds']) for c in claims_},
         **{k: results[k] for k in ('num_models', 'train_time_s', 'wall_time_s')}}
  groups = {}
  for r in results['records']:
    if r['depth'] >= 1 and r['init'] != 'zeros':
      groups.setdefault(f'{r["task"]}_d{r["depth"]}_w{r["hidden_units"]}', []).append(r)
  for suffix, recs in groups.items():
    for split in ('train', 'test'):
      acc = [r[f'{split}_accuracy'] for r in recs]
      out[f'{split}_accuracy_median_{suffix}'] = float(np.median(acc))
      out[f'{split}_accuracy_spread_{suffix}'] = float(max(acc) - min(acc))
  return out


def sweep_markdown(table_rows, results_by_run):
  """Lines for sweep.md: each claim, by id, as it came out in each setting (runs holding / runs making it)."""
  names = list(dict.fromkeys(r['name'] for r in table_rows))
  said = {}
  for res in results_by_run:
    for c in res['claims']:
      said.setdefault(c['id'], c['claim'])
  lines = ['', '## The lecture\'s claims in each setting (runs where the claim holds / runs that make it)', '',
           'Claims as the first run words them; a setting with another activation or task names its own in its '
           'results.md.', '',
           '| claim | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
  for cid, text in said.items():
    cells = []
    for n in names:
      made = [c for row, res in zip(table_rows, results_by_run) if row['name'] == n for c in res['claims']
              if c['id'] == cid]
      cells.append(f'{sum(c["holds"] for c in made)}/{len(made)}' if made else '-')
    lines.append(f'| `{cid}`: {text} | ' + ' | '.join(cells) + ' |')
  return lines


def summary(results):
  """A few lines for the terminal."""
  out = [f'{results["num_models"]} models in {results["wall_time_s"]} s']
  out += [f'[{"yes" if c["holds"] else "NO "}] {c["claim"]}: {c["measured"]}' for c in results['claims']]
  return '\n'.join(out)


def evaluation_summary(out):
  """eval.py's lines for the terminal: median test accuracy over seeds of each setting."""
  by_setting = {}
  for r in out['records']:
    by_setting.setdefault((r['task'], r['hidden_units'], r['depth'], r['init']), []).append(r['test_accuracy'])
  lines = [f'median test accuracy over seeds on the {out["split"]} ({len(out["records"])} models):']
  lines += [f'  {t:8s} depth {d} {w:3d} units {init:8s} {np.median(accs):.3f}'
            for (t, w, d, init), accs in sorted(by_setting.items())]
  return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------- figures

_apply = jax.jit(mlp.apply, static_argnames='activation')  # one program per net shape, not one per operation


def _panel(params, width, activation, x, y, title, hidden_lines=True):
  """hidden_units_figures._panel's numbers for one net: its scores on the figure's grid, the points, and its first
  hidden layer's lines."""
  masks = mlp.unit_masks_for([width] * len(params['layers']), [l['W'].shape[1] for l in params['layers']])
  z = _apply(params, _GRID_POINTS, activation=activation, unit_masks=masks or None)[:, 0]
  lines = None
  if hidden_lines and params['layers']:
    first = params['layers'][0]
    lines = (first['W'][:, :width], first['W0'][:width])
  return {'z': np.asarray(z).reshape(len(GRID), len(GRID)), 'x': x, 'y': y, 'title': title, 'lines': lines}


class _Models:
  """The models of `runs`, looked up by field values: find(**kw) is the (run, index) of the first model whose fields
  match kw, through one dict per set of fields (the figures look up thousands; a scan each took seconds)."""

  def __init__(self, runs):
    self._runs, self._tables = runs, {}

  def find(self, **kw):
    fields = tuple(sorted(kw))
    if fields not in self._tables:
      table = self._tables[fields] = {}
      for run in self._runs:
        for i, m in enumerate(run['models']):
          table.setdefault(tuple(getattr(m, f) for f in fields), (run, i))
    try:
      return self._tables[fields][tuple(kw[f] for f in fields)]
    except KeyError:
      raise KeyError(kw) from None

  def final_accuracy(self, **kw):
    run, i = self.find(**kw)
    return run['curves']['train_accuracy'][i, -1]


def figures(runs, datasets, config):
  """The figures, each (file name, the function of FIGURES that draws it, its numbers) as soon as its numbers are
  computed (a generator: the first can be drawing while the next is computed)."""
  models = _Models(runs)
  cl, act, seed, init = config.claims, config.model.activation, config.seed, config.model.weight_init
  at = cl.at_epoch
  seeds = range(config.seed, config.seed + config.num_seeds)

  # 1. The lecture's pictures: points, boundary and each hidden unit's line, before and after ~10 epochs.
  for task in (cl.easy_task, cl.hard_task):
    rows = []
    for w in (cl.few_units, cl.many_units):
      run1, i = models.find(task=task, hidden=(w,), init=init, seed=seed)
      x, y = _train_of(datasets, task, run1['models'][i].data_seed)
      row = []
      for e, label in ((0, 'before training'), (at, f'after {at} epochs'), (config.train.epochs, 'final')):
        p = _model_params(run1['snapshots'][e] if e in run1['snapshots'] else run1['params'], i)
        acc = run1['curves']['train_accuracy'][i, e]
        row.append(_panel(p, w, act, x, y, f'{w} units, {label}: training acc {acc:.2f}'))
      rows.append(row)
    yield (f'boundaries_{task}.png', 'boundaries', {
        'grid': GRID, 'panels': rows, 'figsize': (9, 6.2),
        'title': f'{task}: decision boundary (black) and hidden units\' lines z_j = 0 (dashed), seed {seed}'})

  # 2. Every task: the linear net and growing nets, final boundaries.
  has_linear = any(r['depth'] == 0 for r in runs)
  cols = [('linear', 0, 0)] if has_linear else []
  cols += [(f'depth 1, {cl.few_units} units', 1, cl.few_units), (f'depth 1, {cl.many_units} units', 1,
                                                                 cl.many_units)]
  dmax, wmax = max(config.model.depths), max(config.model.hidden_units)
  if (dmax, wmax) != (1, cl.many_units):
    cols.append((f'depth {dmax}, {wmax} units', dmax, wmax))
  rows = []
  for task in config.data.tasks:
    row = []
    for label, d, w in cols:
      run, i = models.find(task=task, hidden=(w,) * d, init=init, seed=seed)
      x, y = _train_of(datasets, task, run['models'][i].data_seed)
      row.append(_panel(_model_params(run['params'], i), w, act, x, y,
                        f'{task}, {label}\ntraining accuracy {run["curves"]["train_accuracy"][i, -1]:.2f}',
                        hidden_lines=(d == 1)))
    rows.append(row)
  yield ('boundaries_all_tasks.png', 'boundaries', {
      'grid': GRID, 'panels': rows, 'figsize': (2.8 * len(cols), 3.0 * len(config.data.tasks)), 'title_y': 1.0,
      'title': f'Final decision boundaries on the training points, seed {seed}', 'tight_layout': True})

  # 3. Accuracy against hidden units, spread over seeds, one line per depth.
  widths = sorted(config.model.hidden_units)
  tasks = []
  for task in config.data.tasks:
    depths = [(f'depth {d}', np.array([[models.final_accuracy(task=task, hidden=(w,) * d, init=init, seed=s)
                                        for w in widths] for s in seeds])) for d in config.model.depths]
    linear = (np.median(np.array([models.final_accuracy(task=task, hidden=(), seed=s) for s in seeds]))
              if has_linear else None)
    tasks.append((task, depths, linear))
  yield 'accuracy_vs_units.png', 'accuracy_vs_units', {'widths': widths, 'tasks': tasks, 'num_seeds': config.num_seeds}

  # 4. Training curves: few vs many units, random vs zero init.
  tasks = []
  for task in (cl.easy_task, cl.hard_task):
    bands = []
    for w in (cl.few_units, cl.many_units):
      for scheme, ls in ((init, '-'), ('zeros', ':')):
        found = [models.find(task=task, hidden=(w,), init=scheme, seed=s) for s in seeds
                 if any(m.init == scheme for r in runs for m in r['models'])]
        if found:
          bands.append((f'{w} units, {scheme} init', np.stack([run['curves']['train_accuracy'][i] for run, i in found]),
                        ls))
    tasks.append((task, bands))
  yield 'training_curves.png', 'training_curves', {'epochs': config.train.epochs, 'at': at, 'tasks': tasks,
                                                   'num_seeds': config.num_seeds}
