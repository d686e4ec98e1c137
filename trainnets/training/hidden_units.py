"""The per-example SGD sweep trainer: many small nets on the 2-D tasks, one compiled program per depth and width.

`train_and_evaluate(config, workdir)` runs these stages (config: experiments/hidden_units.py):
  1. check     every config value (validate), then the workdir; nothing is written before both pass.
  2. data      the tasks' training and test points (trainnets/data/toy2d.py), the same for every model seed.
  3. models    every (task, depth, width, init, seed), grouped by (depth, padded width) into compiled programs.
  4. train     per group, trainnets/training/vmap_sweep.py: vmap over models, scan over steps, an epoch per call; a
               metrics.jsonl row per epoch (mean loss and accuracy, learning rate, model-updates/s) and the
               progress bar or, in a log file, progress lines.
  5. results   one record per model (results.json), the curves (curves.npz), the final parameters and the
               snapshots the figures show (params.npz). experiments/report.py reads them back (load_runs) for the
               claims, results.md and the figures; train.py's report starts from the same numbers in memory,
               handed over (`trained`) just before they are written.
`train_and_evaluate_many([(config, workdir), ...])` runs several sweeps in one process (train.py --runs, the sweep
launcher), their nets that differ only in PER_NET_KEYS in shared programs; train_and_evaluate is it for one run.
`evaluate_workdir(config, workdir, fresh_points=N)` re-evaluates the saved parameters (eval.py).
"""
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import os
import time
import zipfile

import jax
import ml_collections
import numpy as np

from nets import activations
from nets import init as init_lib
from nets import losses
from nets import mlp
from trainnets import errors
from trainnets.data import toy2d
from trainnets.errors import ConfigError
from trainnets.errors import Interrupted
from trainnets.errors import require
from trainnets.errors import TrainingDiverged
from trainnets.errors import WorkdirError
from trainnets.training import loop
from trainnets.training import metrics as metrics_lib
from trainnets.training import models_last
from trainnets.training import optim
from trainnets.training import vmap_sweep
from trainnets.training import workdir as workdir_lib

CPU_DEVICES = None  # independent models, no collectives: one JAX device per core runs them in parallel
SCHEDULES = ('constant', 'inverse_time', 'cosine', 'step')  # no 'plateau': nothing is evaluated during training


def validate(c):
  """Raises ConfigError naming the first bad value and what to pass instead."""
  require(c.num_seeds >= 1, f'num_seeds must be >= 1, got {c.num_seeds}')
  require(len(c.data.tasks) >= 1 and set(c.data.tasks) <= set(toy2d.TASKS),
       f'data.tasks {tuple(c.data.tasks)} must be a non-empty subset of {toy2d.TASKS}')
  require(c.data.num_test >= 1, f'data.num_test must be >= 1, got {c.data.num_test}')
  require(c.data.num_train >= c.train.batch_size >= 1,
       f'need data.num_train >= train.batch_size >= 1, got {c.data.num_train} and {c.train.batch_size}')
  require(0 <= c.data.margin <= 0.1, f'data.margin must be in [0, 0.1], got {c.data.margin}')
  whole = lambda values: len(values) >= 1 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                   for v in values)
  require(whole(c.model.hidden_units), f'model.hidden_units must be whole numbers >= 1, got '
          f'{tuple(c.model.hidden_units)}; write them like --config.model.hidden_units=2,10')
  require(whole(c.model.depths), f'model.depths must be whole numbers >= 1 (the linear net is '
          f'model.include_linear), got {tuple(c.model.depths)}; write them like --config.model.depths=1,2')
  require(c.model.activation in activations.ACTIVATIONS,
       f'model.activation {c.model.activation!r} is unknown; choose one of {sorted(activations.ACTIVATIONS)}')
  require(c.model.weight_init in init_lib.WEIGHT_INITS,
       f'model.weight_init {c.model.weight_init!r} is unknown; choose one of {init_lib.WEIGHT_INITS}')
  require(c.model.offset_init in init_lib.OFFSET_INITS,
       f'model.offset_init {c.model.offset_init!r} is unknown; choose one of {init_lib.OFFSET_INITS}')
  require(c.model.weight_std > 0 and c.model.offset_std > 0, 'model.weight_std and model.offset_std must be > 0')
  require(c.train.loss in losses.BINARY_LOSSES,
       f'train.loss {c.train.loss!r} is unknown; choose one of {sorted(losses.BINARY_LOSSES)}')
  require(c.train.sampling in vmap_sweep.SAMPLINGS,
       f'train.sampling {c.train.sampling!r} is unknown; choose one of {vmap_sweep.SAMPLINGS}')
  require(c.train.epochs >= 1, f'train.epochs must be >= 1, got {c.train.epochs}')
  require(c.train.progress_every_s >= 0, f'train.progress_every_s must be >= 0, got {c.train.progress_every_s}')
  require(c.train.unroll >= 1, f'train.unroll must be >= 1, got {c.train.unroll}')
  require(c.train.layout in models_last.LAYOUTS,
          f'train.layout {c.train.layout!r} is unknown; choose one of {models_last.LAYOUTS}')
  if c.train.layout == 'models_last':  # refused where it would not give the same bits
    for depth, pad in models_for(c):
      models_last.layout_for(train_config_for_depth(c, depth), (pad,) * depth)
  require(isinstance(c.train.parallel_tasks, bool), f'train.parallel_tasks must be True or False, got '
          f'{c.train.parallel_tasks!r}')
  require(all(p >= 1 for p in c.train.pad_widths), f'train.pad_widths must be >= 1, got {tuple(c.train.pad_widths)}')
  require(c.train.deep_learning_rate > 0, f'train.deep_learning_rate must be > 0, got {c.train.deep_learning_rate}')
  for depth in sorted({1, *c.model.depths}):  # checks the optimiser, learning rates and schedule
    tx(c, depth)
  require(c.claims.easy_task in c.data.tasks and c.claims.hard_task in c.data.tasks,
       f'claims.easy_task and claims.hard_task must be among data.tasks {tuple(c.data.tasks)}')
  require({c.claims.few_units, c.claims.many_units} <= set(c.model.hidden_units) and 1 in c.model.depths,
       f'claims.few_units and claims.many_units must be in model.hidden_units {tuple(c.model.hidden_units)}, '
       'and model.depths must include 1')
  require(1 <= c.claims.at_epoch <= c.train.epochs,
       f'claims.at_epoch must be in [1, train.epochs={c.train.epochs}], got {c.claims.at_epoch}')
  need, have = memory_needed(c), os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  require(need < have / 2, f'this sweep of {num_models(c):,} nets needs about {need / 2**30:,.1f} GiB of memory, more '
          f'than half of this machine\'s {have / 2**30:,.1f} GiB; run fewer seeds, tasks or widths (or split them '
          'into several runs)')


def num_models(c):
  """How many nets the sweep of `c` trains (models_for's count, without building them)."""
  per_task = len(c.model.depths) * len(c.model.hidden_units) + bool(c.model.include_linear)
  zero = 4 if c.claims.zero_init and c.model.weight_init != 'zeros' else 0  # 2 tasks x 2 widths
  return c.num_seeds * (len(c.data.tasks) * per_task + zero)


def memory_needed(c):
  """A bound on the bytes the sweep holds at once: per net its padded parameters (final, initial and two
  snapshots, and the optimiser's), its curves and its copy of the points, in float32."""
  width = max([p for p in c.train.pad_widths if p >= max(c.model.hidden_units)], default=max(c.model.hidden_units))
  params = mlp.num_params((2, *(width,) * max(c.model.depths), 1))
  per_net = 6 * params + 4 * (c.train.epochs + 1) + 3 * (c.data.num_train + c.data.num_test)
  return 4 * per_net * num_models(c)


def train_config_for_depth(c, depth):
  """config.train with the step size of nets of `depth` hidden layers (deep_learning_rate from depth 2)."""
  t = ml_collections.ConfigDict(c.train.to_dict())
  if depth >= 2:
    t.learning_rate = c.train.deep_learning_rate
  return t


def steps_per_epoch(c):
  return c.data.num_train // c.train.batch_size


def tx(c, depth, learning_rate=None):
  """The optimiser of the nets of `depth` hidden layers, each trained for epochs * steps_per_epoch steps;
  `learning_rate`: eta_0 in place of the config's (a traced value, optim.schedule)."""
  return optim.optimizer(train_config_for_depth(c, depth), c.train.epochs * steps_per_epoch(c), SCHEDULES,
                         learning_rate)


def models_for(c):
  """Every model of the sweep, grouped into compiled programs: {(depth, padded width): [Model, ...]}."""
  seeds = range(c.seed, c.seed + c.num_seeds)
  # data.seed_per_model: model seed s trains on its own draw of each task, data seed data.seed + (s - seed)
  data = {s: c.data.seed + s - c.seed if c.data.seed_per_model else None for s in seeds}
  models = [vmap_sweep.Model(t, (), c.model.weight_init, s, data[s])
            for t in c.data.tasks for s in seeds] if c.model.include_linear else []
  models += [vmap_sweep.Model(t, (w,) * d, c.model.weight_init, s, data[s])
             for d in c.model.depths for t in c.data.tasks for w in c.model.hidden_units for s in seeds]
  if c.claims.zero_init and c.model.weight_init != 'zeros':
    models += [vmap_sweep.Model(t, (w,), 'zeros', s, data[s])
               for t in (c.claims.easy_task, c.claims.hard_task)
               for w in (c.claims.few_units, c.claims.many_units) for s in seeds]
  groups = {}
  for m in models:
    width = m.hidden[0] if m.hidden else 0
    pad = min([p for p in c.train.pad_widths if p >= width], default=width)
    groups.setdefault((m.depth, pad if m.hidden else 0), []).append(m)
  return dict(sorted(groups.items()))


PARAMS_FILE = 'params.npz'


def save_params(path, runs):
  """Every model's final parameters: per run k, its stacked leaves `k/i` in tree order and its models; and the
  snapshots after epoch e, `k/epoch<e>/i`."""
  arrays = {}
  for k, run in enumerate(runs):
    for i, leaf in enumerate(jax.tree.leaves(run['params'])):
      arrays[f'{k}/{i}'] = leaf
    for e, snapshot in run.get('snapshots', {}).items():
      arrays.update({f'{k}/epoch{e}/{i}': leaf for i, leaf in enumerate(jax.tree.leaves(snapshot))})
    arrays[f'{k}/models'] = np.asarray([json.dumps(dataclasses.asdict(m)) for m in run['models']])
    arrays[f'{k}/padded'] = np.asarray(run['padded'], np.int32)
  workdir_lib.write_npz(path, compressed=True, **arrays)


def load_params(path, snapshots=False):
  """[(models, padded widths, stacked params)] as save_params wrote them; with `snapshots`, a fourth item
  {epoch: stacked params} of the snapshots."""
  with np.load(path) as f:
    runs, k = [], 0
    while f'{k}/models' in f:
      models = [vmap_sweep.Model(**{**d, 'hidden': tuple(d['hidden'])}) for d in map(json.loads, f[f'{k}/models'])]
      padded = tuple(int(p) for p in f[f'{k}/padded'])
      tree = mlp.structure(len(padded))
      n = tree.num_leaves
      run = (models, padded, jax.tree.unflatten(tree, [f[f'{k}/{i}'] for i in range(n)]))
      if snapshots:
        epochs = sorted({int(name.split('/')[1][5:]) for name in f.files if name.startswith(f'{k}/epoch')})
        run += ({e: jax.tree.unflatten(tree, [f[f'{k}/epoch{e}/{i}'] for i in range(n)]) for e in epochs},)
      runs.append(run)
      k += 1
  return runs


def _curves_key(depth, padded):
  return f'depth{depth}_width{padded[0] if padded else 0}'


def load_runs(config, workdir):
  """(runs, datasets) of a finished workdir as train_and_evaluate held them: per compiled program its models,
  depth, final parameters, snapshots and curves (params.npz and curves.npz), and every model's data drawn again
  from the config. A WorkdirError if a file is missing or damaged."""
  try:
    saved = load_params(os.path.join(workdir, PARAMS_FILE), snapshots=True)
    with np.load(os.path.join(workdir, 'curves.npz')) as f:
      curves = {name: f[name] for name in f.files}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise WorkdirError(f'{workdir} lacks a readable {PARAMS_FILE} or curves.npz '
                       f'({errors.one_line(e) or type(e).__name__}); train again into a new --workdir') from None
  runs = []
  for models, padded, params, snapshots in saved:
    key = _curves_key(models[0].depth, padded)
    runs.append({'models': models, 'padded': padded, 'depth': models[0].depth, 'params': params,
                 'snapshots': snapshots, 'curves': {k[:-len(key) - 1]: v for k, v in curves.items()
                                                    if k.endswith('_' + key)}})
  return runs, _datasets(config, [m for models, *_ in saved for m in models])


def _datasets(config, models, drawn=None):
  """{dataset key: (train, test)} of every model's task and data seed, each drawn once; `drawn`: the data sets
  already drawn, {draw key (_draw_key): (train, test)}."""
  keys = {m.dataset: _draw_key(config, m) for m in models}
  if drawn is None:
    drawn = toy2d.train_test_many(keys.values())
  return {key: drawn[draw] for key, draw in keys.items()}


def evaluate_workdir(config, workdir, step=None, fresh_points=0):
  """Re-evaluates every saved model on the test split (or on `fresh_points` new points per task).

  On the test split the numbers must equal results.json's; a mismatch means the saved parameters or the data
  generation changed since training, and is reported as an error.
  """
  if step is not None:
    raise ConfigError('--step applies to checkpointed experiments; hidden_units keeps only final parameters')
  if fresh_points < 0:
    raise ConfigError(f'--fresh_points must be >= 0 (0: the test split), got {fresh_points}')
  path = os.path.join(workdir, PARAMS_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{workdir} has no {PARAMS_FILE}: train first with python train.py '
                       f'--config=experiments/hidden_units.py --workdir={workdir}')
  try:
    saved_runs = load_params(path)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise WorkdirError(f'{path} cannot be read ({errors.one_line(e) if str(e) else type(e).__name__ + ": truncated"})'
                       '; train again into a new --workdir') from None
  saved = None
  if not fresh_points:  # read before evaluating, so a damaged results.json costs no work
    saved = workdir_lib.read_json(os.path.join(workdir, 'results.json')).get('records')
    if not isinstance(saved, list):
      raise WorkdirError(f'{workdir}/results.json holds no records; train again into a new --workdir')
  workdir_lib.lock(workdir)  # the inputs are sound: from here on this process writes the workdir
  which, n = (toy2d.FRESH, fresh_points) if fresh_points else (toy2d.TEST, config.data.num_test)
  datasets = {m.dataset: toy2d.draw(config.data.seed if m.data_seed is None else m.data_seed, m.task, which, n,
                                    config.data.margin) for models, _, _ in saved_runs for m in models}
  rows = []
  for models, padded, params in saved_runs:
    x = np.stack([datasets[m.dataset][0] for m in models])
    y = np.stack([datasets[m.dataset][1] for m in models])
    one = functools.partial(vmap_sweep.loss_and_accuracy, activation=config.model.activation, loss=config.train.loss)
    _, acc = jax.jit(jax.vmap(one))(params, x, y, vmap_sweep.masks_for(models, padded))
    rows += [(m, float(a)) for m, a in zip(models, np.asarray(acc))]
  split = f'{fresh_points} fresh points' if fresh_points else 'test split'
  fields = ('task', 'hidden_units', 'depth', 'init', 'seed', 'data_seed')
  out = {'split': split, 'records': [
      {'task': m.task, 'hidden_units': m.hidden[0] if m.hidden else 0, 'depth': m.depth, 'init': m.init,
       'seed': m.seed, **data_seed(m), 'test_accuracy': a} for m, a in rows]}
  if not fresh_points:
    key = lambda r: tuple(r.get(f) for f in fields)
    expected = {key(r): r.get('test_accuracy') for r in saved if isinstance(r, dict)}
    got = {key(r): r['test_accuracy'] for r in out['records']}
    if any(not isinstance(expected.get(k), (int, float)) for k in got):
      raise WorkdirError(f'{workdir}/results.json does not record every saved model\'s test accuracy; train again '
                         'into a new --workdir')
    worst = max(abs(expected[k] - got[k]) for k in got)
    out['max_abs_diff_vs_results_json'] = worst
    if worst > 1e-6:
      raise WorkdirError(f'saved parameters give test accuracies up to {worst:.4f} away from results.json: the '
                         'workdir was changed or the code changed since training; retrain into a new --workdir')
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), out)
  return out


def _weights_moved(run):
  """[M]: each model's max |W - W_init| and |V - V_init| (offsets excluded)."""
  p, p0 = run['params'], run['params0']
  pairs = [(p['V'], p0['V'])] + [(l['W'], l0['W']) for l, l0 in zip(p['layers'], p0['layers'])]
  return np.max([np.abs(w - w0).reshape(len(w), -1).max(axis=1) for w, w0 in pairs], axis=0)


def check_finite(losses, models, epoch):
  """A TrainingDiverged error naming the first nets whose training loss after `epoch` is not finite."""
  diverged = np.flatnonzero(~np.isfinite(np.asarray(losses)))
  if diverged.size:
    what = lambda m: f'{m.task} ' + (f'{m.depth}x{m.hidden[0]} units' if m.hidden else 'linear') + f' seed {m.seed}'
    named = ', '.join(what(models[i]) for i in diverged[:3])
    raise TrainingDiverged(f'{diverged.size} of {len(models)} nets diverged by epoch {epoch} (training loss not '
                           f'finite: {named}{" ..." if diverged.size > 3 else ""}); lower --config.train.learning_rate '
                           '(or deep_learning_rate) and run again in a new --workdir')


def data_seed(m):
  """A record's data_seed field: present only where each model seed drew its own data (data.seed_per_model)."""
  return {} if m.data_seed is None else {'data_seed': m.data_seed}


def records(runs, config):
  """One dict per trained model, in the order of the runs (models_for)."""
  at = config.claims.at_epoch
  out = []
  for run in runs:
    depth = run['depth']
    c, test, moved = run['curves'], run['test'], _weights_moved(run)
    for i, m in enumerate(run['models']):
      out.append({
          'task': m.task, 'hidden_units': m.hidden[0] if m.hidden else 0, 'depth': depth, 'init': m.init,
          'seed': m.seed, **data_seed(m), 'epochs': int(run['epochs'][i]), 'solved': bool(c['train_loss'][i, -1] == 0),
          'train_accuracy': float(c['train_accuracy'][i, -1]), 'test_accuracy': float(test['test_accuracy'][i]),
          'train_loss': float(c['train_loss'][i, -1]), 'test_loss': float(test['test_loss'][i]),
          f'train_accuracy_epoch{at}': float(c['train_accuracy'][i, at]),
          'num_params': mlp.num_params((2, *m.hidden, 1)), 'weights_moved': float(moved[i])})
  return out


# Keys each net carries as its own data (its step size, initial parameters, seeds, data set) or that only choose
# which nets a run has: runs that differ in nothing else run their groups through the same compiled programs
# (train_and_evaluate_many). Every other key shapes the programs.
PER_NET_KEYS = ('experiment', 'seed', 'num_seeds', 'data.tasks', 'data.margin', 'data.seed', 'data.seed_per_model',
                'model.hidden_units', 'model.depths', 'model.include_linear', 'model.weight_init', 'model.weight_std',
                'model.offset_init', 'model.offset_std', 'train.learning_rate', 'train.deep_learning_rate',
                'train.pad_widths', 'train.progress_every_s', 'claims.')


def program_key(c):
  """The config's values that its compiled programs depend on (all but PER_NET_KEYS), as a hashable tuple."""
  flat = workdir_lib.flatten(workdir_lib.config_to_dict(c))
  shared = lambda k: any(k == p or (p.endswith('.') and k.startswith(p)) for p in PER_NET_KEYS)
  return tuple(sorted((k, repr(v)) for k, v in flat.items() if not shared(k)))


@dataclasses.dataclass(frozen=True)
class _Net:
  """One net to train: its model, its data (the arguments of toy2d.train_test) and its eta_0."""
  model: vmap_sweep.Model
  draw: tuple
  eta0: float


def _draw_key(c, m):
  return (c.data.seed if m.data_seed is None else m.data_seed, m.task, c.data.num_train, c.data.num_test,
          c.data.margin)


def _groups(configs):
  """The groups of nets the runs of `configs` train, in training order (by depth and padded width, then run), each
  once: a dict of the group's config (its first run's), program_key, depth, pad, initial-parameter settings, nets
  and `users`,
  the (run index, models) of every run that holds exactly this group. A group is trained as it is alone (the same
  models in the same order: XLA's results for a model can depend on how many a program holds), so a run's records
  are its own; runs that hold the same group (a step-size sweep's deeper nets) share it."""
  groups = {}
  for j, c in enumerate(configs):
    init, program = (c.model.weight_std, c.model.offset_init, c.model.offset_std), program_key(c)
    for (depth, pad), models in models_for(c).items():
      eta0 = train_config_for_depth(c, depth).learning_rate
      nets = tuple(_Net(m, _draw_key(c, m), eta0) for m in models)
      g = groups.setdefault((depth, pad, init, program, nets), {
          'config': c, 'program': program, 'depth': depth, 'pad': pad, 'init': init, 'nets': nets, 'users': []})
      g['users'].append((j, models))
  return [g for _, g in sorted(groups.items(), key=lambda kv: kv[0][:2])]  # stable: ties keep run order


def train_and_evaluate(config, workdir, extend=False):
  """Runs the whole sweep and writes config.json, metrics.jsonl, curves.npz, params.npz and results.json to
  workdir; returns the results. `extend`: rerun a workdir under another value of a key that defines the run."""
  (out,) = train_and_evaluate_many([(config, workdir)], extend)
  return out


def train_and_evaluate_many(runs, extend=False, trained=None):
  """Trains several runs [(config, workdir)] in this process and writes each workdir exactly as
  train_and_evaluate alone would, bit for bit. Runs that differ only in PER_NET_KEYS run their groups through the
  same compiled programs (a step size is each net's runtime value), and a group of nets that several runs hold is
  trained once (_groups). Returns each run's results. `trained(config, workdir, loaded)` is called as each run is
  trained, just before its files are written, with `loaded` what load_runs would read back from them (its report
  can start, and draw its figures, while they are written); its first error is raised once every run is written.
  A run whose nets diverge is reported (TrainingDiverged,
  after the other runs are written); every run's config and workdir are checked before any is written."""
  configs = [c for c, _ in runs]
  for c in configs:
    validate(c)
  need, have = sum(map(memory_needed, configs)), os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  require(len(runs) == 1 or need < have / 2, f'these {len(runs)} runs need about {need / 2**30:,.1f} GiB together, '
          f'more than half of this machine\'s {have / 2**30:,.1f} GiB; train them in smaller batches')
  for c, w in runs:  # every workdir checked before any is written
    workdir_lib.check_usable(w, c, extend)
  paths = [os.path.realpath(w) for _, w in runs]
  if len(set(paths)) < len(paths):
    raise ConfigError('two of the runs to train together have the same workdir; give each its own')
  for c, w in runs:
    workdir_lib.prepare(w, c, extend)
  start = time.time()
  groups = _groups(configs)
  draws = {n.draw for g in groups for n in g['nets']}
  # every group's initial parameters in one compiled draw per init scheme (a program per group compiled for 8 s),
  # drawn in another thread while this one draws the data sets: either compiling alone leaves the cores idle
  by_init = {}
  for g in groups:
    by_init.setdefault(g['init'], []).extend(n.model for n in g['nets'])
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='initial-parameters') as beside:
    initial = beside.submit(lambda: {k: vmap_sweep.InitialParams(models, *k) for k, models in by_init.items()})
    datasets = toy2d.train_test_many(sorted(draws, key=repr))
    initial = initial.result()
  snapshots = [(0, c.claims.at_epoch) for c in configs]
  order = [list(models_for(c)) for c in configs]  # each run's groups (depth, pad), in its own order
  compiled = {}  # (program_key, depth) -> vmap_sweep.Programs: groups of the same shapes reuse its compilations
  results = [[] for _ in runs]
  failed = {}
  progress = metrics_lib.Progress(sum(g['config'].train.epochs for g in groups), 'hidden units', unit='model-updates',
                                  every_s=configs[0].train.progress_every_s)
  done_epochs = 0
  # SIGINT (Ctrl-C) and SIGTERM stop the run at the end of the epoch under way, as one Interrupted line: the
  # KeyboardInterrupt Python would raise can land in a garbage-collection callback and be swallowed.
  with contextlib.ExitStack() as stack:
    writers = [stack.enter_context(metrics_lib.MetricsWriter(w, start_step=0, tensorboard=True, config=c))
               for c, w in runs]
    # the metrics rows are written in another thread while the next epoch trains (each row opens and closes
    # metrics.jsonl and the event file, as long as a small group's epoch takes)
    behind = stack.enter_context(metrics_lib.WriteBehind())
    stop = stack.enter_context(loop.StopRequests())
    stack.enter_context(progress)

    def ready(g):  # the group's nets placed on the devices and its programs compiled (groups in training order)
      c, depth = g['config'], g['depth']
      train_cfg, group_tx = train_config_for_depth(c, depth), functools.partial(tx, c, depth)
      if (g['program'], depth) not in compiled:  # made by the first group of its program, reused by the others
        compiled[g['program'], depth] = vmap_sweep.Programs(group_tx, c.model, train_cfg)
      return vmap_sweep.Group(
          [n.model for n in g['nets']], datasets, c.model, train_cfg, group_tx,
          snapshot_epochs=sorted({e for j, _ in g['users'] for e in snapshots[j]}), initial=initial[g['init']],
          learning_rates=[n.eta0 for n in g['nets']], dataset_keys=[n.draw for n in g['nets']],
          programs=compiled[g['program'], depth]).compile()

    # each group made ready in another thread while the one before it trains: compiling beside training fills the
    # cores that compiling alone leaves idle
    ahead = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='next-group')
    stack.callback(ahead.shutdown, wait=False, cancel_futures=True)  # an interrupted run waits for no compilation
    following = ahead.submit(ready, groups[0])
    for i, g in enumerate(groups):
      group = following.result()
      if i + 1 < len(groups):
        following = ahead.submit(ready, groups[i + 1])
      c, depth, pad, users = g['config'], g['depth'], g['pad'], g['users']
      live = [(j, models) for j, models in users if j not in failed]
      if not live:  # every run holding this group has failed
        continue
      steps, epochs = steps_per_epoch(c), c.train.epochs
      runs_note = f' of {len(users)} runs' if len(users) > 1 else ''
      progress.set_description(f'hidden units: depth {depth}, width <= {pad}, {len(g["nets"])} models{runs_note}'
                               if depth else f'hidden units: linear, {len(g["nets"])} models{runs_note}')
      sched = optim.schedule(group.train_cfg, epochs * steps, SCHEDULES)
      clock = {'t': time.time()}

      def on_epoch(epoch, m, active, depth=depth, pad=pad, live=live, sched=sched, clock=clock, steps=steps,
                   epochs=epochs):
        if stop.signal is not None:
          raise Interrupted(f'{stop.name}: stopped at epoch {epoch} of the nets of depth {depth}; this trainer keeps '
                            'no checkpoints (the whole sweep takes about a minute): run the same command to train '
                            'it again')
        try:  # every run in `live` holds these very nets: they diverge for all of them or none
          check_finite(m['train_loss'], live[0][1], epoch)
        except TrainingDiverged as diverged:
          failed.update({j: diverged for j, _ in live})
          if len(failed) == len(runs):
            raise
          raise _GroupFailed from None
        now, training = time.time(), int(active.sum())
        updates = training * steps
        lr = float(sched(epoch * steps - 1))  # the step size of the epoch's last update
        row = dict(depth=depth, padded_width=pad, epoch=epoch, models_training=training,
                   train_loss_mean=float(m['train_loss'].mean()), train_accuracy_mean=float(m['train_accuracy'].mean()),
                   learning_rate=lr, model_updates_per_s=round(updates / max(now - clock['t'], 1e-9)))
        for j, _ in live:
          behind.submit(writers[j].write, order[j].index((depth, pad)) * epochs + epoch, **row)
        clock['t'] = now
        progress.update(1, work=updates, epoch=f'{epoch}/{epochs}', loss=float(m['train_loss'].mean()), lr=lr)

      try:
        result = group.train(on_epoch)
      except _GroupFailed:
        pass  # every run holding it has failed: nothing of this group is kept
      else:
        for j, models in live:
          results[j].append({**result, 'snapshots': {e: result['snapshots'][e] for e in snapshots[j]},
                             'models': models, 'depth': depth})
      progress.update(epochs - (progress.done - done_epochs))  # epochs skipped by an early stop
      done_epochs += epochs
  train_time = time.time() - start
  out, hook_failed = [], None
  for j, (c, w) in enumerate(runs):
    if j not in failed:  # results[j] holds the run's groups in its own order: groups go by (depth, pad) too
      if trained:
        try:
          trained(c, w, _as_loaded(c, results[j], datasets))
        except Exception as e:  # noqa: BLE001 (what starts as a run is trained never stops its files or the next run's)
          hook_failed = hook_failed or e
      out.append(_write(c, w, results[j], start, train_time))
  if failed:
    named = '; '.join(f'{runs[j][1]}: {e}' for j, e in sorted(failed.items()))
    raise TrainingDiverged(f'{len(failed)} of {len(runs)} runs trained together diverged ({named}); the other runs '
                           'are written')
  if hook_failed:
    raise hook_failed
  return out


def _as_loaded(config, runs, datasets):
  """A trained run's (runs, datasets), as load_runs reads them back from the files _write writes."""
  keys = ('models', 'padded', 'depth', 'params', 'snapshots', 'curves')
  return [{k: r[k] for k in keys} for r in runs], _datasets(config, [m for r in runs for m in r['models']], datasets)


class _GroupFailed(Exception):
  """Every run holding the group under training has diverged: its remaining epochs are skipped."""


def _write(config, workdir, runs, start, train_time):
  """Writes a finished run's curves.npz, params.npz and results.json; returns the results."""
  records_ = records(runs, config)
  curves = {f'{k}_{_curves_key(r["depth"], r["padded"])}': v for r in runs for k, v in r['curves'].items()}
  workdir_lib.write_npz(os.path.join(workdir, 'curves.npz'), compressed=True, **curves)
  save_params(os.path.join(workdir, PARAMS_FILE), runs)
  results = {
      'experiment': config.experiment,
      'command': metrics_lib.command(),
      'machine': metrics_lib.machine(),
      'train_time_s': round(train_time, 2),
      'wall_time_s': round(time.time() - start, 2),
      'num_models': len(records_),
      'devices': [str(d) for d in jax.devices()],
      'records': records_,
  }
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  return results
