"""The hidden-units sweep's report: the lecture's claims with measured numbers, results.md, figures, summaries.

Nothing here trains: `render` reads a finished workdir (results.json's records, and the parameters, snapshots
and curves trainnets/training/hidden_units.py saved) and derives everything else from them and the config.
"""
import functools
import os

import jax
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from experiments import claims as claims_lib
from experiments import hidden_units_claims
import nets
from nets import mlp
from trainnets import files
from trainnets.training import hidden_units as trainer
from trainnets.training import workdir as workdir_lib


def _model_params(tree, i):
  return jax.tree.map(lambda a: a[i], tree)



def _median(recs, key):
  return float(np.median([r[key] for r in recs]))


@functools.cache
def counted_params(depth, width):
  """Parameters of a real (unpadded) net, counted from the arrays its init makes."""
  return nets.num_params(jax.eval_shape(lambda: mlp.init(jax.random.PRNGKey(0), (2,) + (width,) * depth + (1,))))


def render(config, workdir):
  """Writes claims.json (the lecture's claims, judged), the figures and results.md of a finished workdir;
  returns results.json with the claims and figure names added."""
  results = current(workdir_lib.read_json(os.path.join(workdir, 'results.json')), config)
  runs, datasets = trainer.load_runs(config, workdir)
  results['figures'] = figures(runs, datasets, config, os.path.join(workdir, 'figures'))
  workdir_lib.write_json(os.path.join(workdir, 'claims.json'), {'claims': results['claims']})
  workdir_lib.write_text(os.path.join(workdir, 'results.md'), markdown(config, results))
  return results


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


def _decision(params, width, activation, grid_GxG2):
  masks = mlp.unit_masks_for([width] * len(params['layers']), [l['W'].shape[1] for l in params['layers']])
  return np.asarray(_apply(params, grid_GxG2, activation=activation, unit_masks=masks or None)[:, 0])


def _panel(ax, params, width, activation, x, y, title, hidden_lines=True):
  g = np.linspace(-1.1, 1.1, 161)
  gx, gy = np.meshgrid(g, g)
  z = _decision(params, width, activation, np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
  z = z.reshape(gx.shape)
  ax.contourf(gx, gy, z > 0, levels=[-0.5, 0.5, 1.5], colors=['#f4c7c3', '#c6dbef'], alpha=0.8)
  if z.min() < 0 < z.max():
    ax.contour(gx, gy, z, levels=[0.0], colors='k', linewidths=1.5)
  if hidden_lines and params['layers']:
    W, W0 = params['layers'][0]['W'], params['layers'][0]['W0']
    for j in range(width):  # hidden unit j's line z_j = W[0, j] x1 + W[1, j] x2 + W0[j] = 0
      w1, w2, b = W[0, j], W[1, j], W0[j]
      if abs(w2) > abs(w1):
        ax.plot(g, -(w1 * g + b) / w2, '--', color='0.35', lw=0.8)
      elif abs(w1) > 0:
        ax.plot(-(w2 * g + b) / w1, g, '--', color='0.35', lw=0.8)
  ax.scatter(x[y > 0, 0], x[y > 0, 1], s=9, c='#08519c', marker='+', lw=0.8)
  ax.scatter(x[y < 0, 0], x[y < 0, 1], s=7, c='#a50f15', marker='_', lw=0.8)
  ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xticks=[], yticks=[], aspect='equal')
  ax.set_title(title, fontsize=9)


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


def _band(ax, x, values_SxX, label, **style):
  med = np.median(values_SxX, axis=0)
  lo, hi = np.percentile(values_SxX, [25, 75], axis=0)
  (line,) = ax.plot(x, med, label=label, **style)
  ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def figures(runs, datasets, config, outdir):
  """Writes the PNG figures into outdir; returns their file names."""
  names, models = [], _Models(runs)
  cl, act, seed, init = config.claims, config.model.activation, config.seed, config.model.weight_init
  at = cl.at_epoch
  seeds = range(config.seed, config.seed + config.num_seeds)

  def save(fig, name):
    files.write_figure(os.path.join(outdir, name), fig, dpi=110, bbox_inches='tight')
    plt.close(fig)
    names.append(name)

  # 1. The lecture's pictures: points, boundary and each hidden unit's line, before and after ~10 epochs.
  for task in (cl.easy_task, cl.hard_task):
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.2))
    for row, w in enumerate((cl.few_units, cl.many_units)):
      run1, i = models.find(task=task, hidden=(w,), init=init, seed=seed)
      x, y = _train_of(datasets, task, run1['models'][i].data_seed)
      for col, (e, label) in enumerate(((0, 'before training'), (at, f'after {at} epochs'),
                                        (config.train.epochs, 'final'))):
        p = _model_params(run1['snapshots'][e] if e in run1['snapshots'] else run1['params'], i)
        acc = run1['curves']['train_accuracy'][i, e]
        _panel(axes[row, col], p, w, act, x, y, f'{w} units, {label}: training acc {acc:.2f}')
    fig.suptitle(f'{task}: decision boundary (black) and hidden units\' lines z_j = 0 (dashed), seed {seed}')
    save(fig, f'boundaries_{task}.png')

  # 2. Every task: the linear net and growing nets, final boundaries.
  has_linear = any(r['depth'] == 0 for r in runs)
  cols = [('linear', 0, 0)] if has_linear else []
  cols += [(f'depth 1, {cl.few_units} units', 1, cl.few_units), (f'depth 1, {cl.many_units} units', 1,
                                                                 cl.many_units)]
  dmax, wmax = max(config.model.depths), max(config.model.hidden_units)
  if (dmax, wmax) != (1, cl.many_units):
    cols.append((f'depth {dmax}, {wmax} units', dmax, wmax))
  fig, axes = plt.subplots(len(config.data.tasks), len(cols), figsize=(2.8 * len(cols), 3.0 * len(config.data.tasks)),
                           squeeze=False)
  for r, task in enumerate(config.data.tasks):
    for c, (label, d, w) in enumerate(cols):
      run, i = models.find(task=task, hidden=(w,) * d, init=init, seed=seed)
      x, y = _train_of(datasets, task, run['models'][i].data_seed)
      _panel(axes[r, c], _model_params(run['params'], i), w, act, x, y,
             f'{task}, {label}\ntraining accuracy {run["curves"]["train_accuracy"][i, -1]:.2f}', hidden_lines=(d == 1))
  fig.suptitle(f'Final decision boundaries on the training points, seed {seed}', y=1.0)
  fig.tight_layout()
  save(fig, 'boundaries_all_tasks.png')

  # 3. Accuracy against hidden units, spread over seeds, one line per depth.
  widths = sorted(config.model.hidden_units)
  fig, axes = plt.subplots(1, len(config.data.tasks), figsize=(3.2 * len(config.data.tasks), 3.2), squeeze=False)
  for ax, task in zip(axes[0], config.data.tasks):
    for d in config.model.depths:
      acc = np.array([[models.final_accuracy(task=task, hidden=(w,) * d, init=init, seed=s) for w in widths]
                      for s in seeds])
      _band(ax, widths, acc, f'depth {d}', marker='o', ms=3)
    if has_linear:
      lin = np.array([models.final_accuracy(task=task, hidden=(), seed=s) for s in seeds])
      ax.axhline(np.median(lin), color='0.4', ls=':', label='linear')
    ax.set(xscale='log', xticks=widths, xticklabels=[str(w) for w in widths], xlabel='hidden units per layer',
           ylim=(0.45, 1.02), title=task)
    ax.tick_params(axis='x', labelsize=7)
  axes[0, 0].set_ylabel('final training accuracy')
  axes[0, -1].legend(fontsize=8, loc='lower right')
  fig.suptitle(f'Accuracy vs hidden units: median and 25-75% over {config.num_seeds} seeds', y=1.03)
  save(fig, 'accuracy_vs_units.png')

  # 4. Training curves: few vs many units, random vs zero init.
  epochs = np.arange(config.train.epochs + 1)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, task in zip(axes, (cl.easy_task, cl.hard_task)):
    for w in (cl.few_units, cl.many_units):
      for scheme, ls in ((init, '-'), ('zeros', ':')):
        found = [models.find(task=task, hidden=(w,), init=scheme, seed=s) for s in seeds
                 if any(m.init == scheme for r in runs for m in r['models'])]
        if found:
          curves = np.stack([run['curves']['train_accuracy'][i] for run, i in found])
          _band(ax, epochs, curves, f'{w} units, {scheme} init', ls=ls)
    ax.axvline(at, color='0.6', lw=0.8)
    ax.set(xlabel='epoch', ylabel='training accuracy', title=task, ylim=(0.45, 1.02))
    ax.legend(fontsize=8, loc='lower right')
  fig.suptitle(f'Training curves: median and 25-75% over {config.num_seeds} seeds (zero-init lines coincide)', y=1.02)
  save(fig, 'training_curves.png')
  return names
