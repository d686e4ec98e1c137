"""Several hidden-units runs trained in one process (hidden_units.train_and_evaluate_many, train.py --runs, the
sweep launcher's batches): shared compiled programs, a group of nets several runs hold trained once, and each run's
workdir bit for bit what it is alone."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import claims as claims_lib
from experiments import hidden_units_claims
from experiments import report
from experiments import sweep
from experiments.reports import drawing
from experiments.reports import hidden_units as hidden_units_report
from tests.helpers import assert_one_line_error
from tests.helpers import ROOT
from trainnets import config_keys
from trainnets.errors import TrainingDiverged
from trainnets.training import cli
from trainnets.training import hidden_units
from trainnets.training import workdir as workdir_lib

QUICK = 'experiments/hidden_units.py:quick'
SHORT = {'train.epochs': 4, 'claims.at_epoch': 2}
SETTINGS = [{}, {'train.learning_rate': 3.0}, {'model.weight_init': 'he'}, {'data.margin': 0.02},
            {'data.seed_per_model': True}, {'seed': 2, 'data.seed': 1}]


def configs(settings, **common):
  return [cli.load_config(QUICK, {**SHORT, **common, **s}) for s in settings]


def test_runs_share_programs_and_groups_held_by_several_runs_train_once():
  """Step sizes, initialisation, margins and seeds are each net's own data: such runs share compiled programs
  (one program_key); a group of nets several runs hold alike (the deeper nets, whose step size a sweep of
  train.learning_rate leaves alone) trains once; another activation needs programs of its own."""
  lrs = configs([{'train.learning_rate': lr} for lr in (0.3, 1.0, 3.0)], **{'model.depths': '1,2'})
  assert len({hidden_units.program_key(c) for c in lrs}) == 1
  groups = hidden_units._groups(lrs)
  assert [(g['depth'], g['pad'], [j for j, _ in g['users']]) for g in groups] == [
      (0, 0, [0]), (0, 0, [1]), (0, 0, [2]), (1, 10, [0]), (1, 10, [1]), (1, 10, [2]), (2, 10, [0, 1, 2])]
  relu = configs([{}, {'model.activation': 'relu'}])
  assert hidden_units.program_key(relu[0]) != hidden_units.program_key(relu[1])
  assert len({hidden_units.program_key(c) for c in configs(SETTINGS)}) == 1


def records_and_arrays(workdir):
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  with np.load(os.path.join(workdir, 'params.npz')) as f:
    params = {k: f[k] for k in f.files}
  with np.load(os.path.join(workdir, 'curves.npz')) as f:
    curves = {k: f[k] for k in f.files}
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return results['records'], params, curves, [{k: v for k, v in r.items() if k not in ('time', 'model_updates_per_s')}
                                              for r in rows]


def assert_same_run(together, alone, config):
  """What docs/reproducibility.md promises of a run trained with others: its records, parameters, curves,
  metrics rows (but their times) and claims are those of the run alone, bit for bit."""
  (rec_t, params_t, curves_t, rows_t), (rec_a, params_a, curves_a, rows_a) = map(records_and_arrays,
                                                                                  (together, alone))
  assert params_t.keys() == params_a.keys() and curves_t.keys() == curves_a.keys()
  for k in params_a:
    np.testing.assert_array_equal(params_t[k], params_a[k], err_msg=k)
  for k in curves_a:
    np.testing.assert_array_equal(curves_t[k], curves_a[k], err_msg=k)
  assert rec_t == rec_a and rows_t == rows_a
  verdicts = lambda records: claims_lib.verdicts(hidden_units_claims.CLAIMS, records, config)
  assert verdicts(rec_t) == verdicts(rec_a)


def test_runs_trained_together_equal_each_run_alone(tmp_path):
  cs = configs(SETTINGS, **{'model.depths': '1,2'})
  hidden_units.train_and_evaluate_many([(c, tmp_path / f'together{i}') for i, c in enumerate(cs)])
  for i, c in enumerate(cs):
    hidden_units.train_and_evaluate(c, tmp_path / f'alone{i}')
    assert_same_run(tmp_path / f'together{i}', tmp_path / f'alone{i}', c)


def test_keys_that_say_how_leave_the_run_bit_for_bit_and_the_padding_defines_it(tmp_path):
  """A key marked keys.how only says how a run runs: another value of each gives the same workdir, bit for bit (a
  new how key needs a value here). The padding of widths changes the records (other last bits, carried on by
  SGD), so it defines the run."""
  other = {'train.unroll': 2, 'train.progress_every_s': 1.0, 'train.parallel_tasks': True,
           'train.layout': 'models_first'}
  base = cli.load_config(QUICK, SHORT)
  assert {k for k in workdir_lib.flatten(workdir_lib.config_to_dict(base)) if config_keys.is_how(k)} == set(other)
  hidden_units.train_and_evaluate(base, tmp_path / 'base')
  for key, value in other.items():
    c = cli.load_config(QUICK, {**SHORT, key: value})
    hidden_units.train_and_evaluate(c, tmp_path / key)
    assert_same_run(tmp_path / key, tmp_path / 'base', c)
  padded = cli.load_config(QUICK, {**SHORT, 'train.pad_widths': '2,10'})
  assert not config_keys.is_how('train.pad_widths')
  hidden_units.train_and_evaluate(padded, tmp_path / 'padded')
  assert records_and_arrays(tmp_path / 'padded')[0] != records_and_arrays(tmp_path / 'base')[0]


def test_a_diverging_run_is_reported_and_the_others_are_written(tmp_path):
  ok, bad = configs([{}, {'train.learning_rate': 1e37}], **{'claims.zero_init': False})
  with pytest.raises(TrainingDiverged, match=r'1 of 2 runs trained together diverged \(.*bad: .*nets diverged'):
    hidden_units.train_and_evaluate_many([(ok, tmp_path / 'ok'), (bad, tmp_path / 'bad')])
  assert (tmp_path / 'ok' / 'results.json').exists() and not (tmp_path / 'bad' / 'results.json').exists()


def test_an_error_as_a_run_is_trained_is_raised_once_every_run_is_written(tmp_path):
  """What starts as each run is trained (its report, under train.py) cannot cost it or the other runs their
  files: its first error is raised after the last run is written."""
  a, b = configs([{}, {'train.learning_rate': 3.0}], **{'train.epochs': 2, 'claims.at_epoch': 1})
  seen = []

  def trained(config, workdir, loaded):
    seen.append(os.path.basename(workdir))
    raise RuntimeError(f'report of {os.path.basename(workdir)} failed')

  with pytest.raises(RuntimeError, match='report of a failed'):
    hidden_units.train_and_evaluate_many([(a, tmp_path / 'a'), (b, tmp_path / 'b')], trained=trained)
  assert seen == ['a', 'b']
  assert (tmp_path / 'a' / 'results.json').exists() and (tmp_path / 'b' / 'results.json').exists()


def test_runs_together_refuse_a_shared_workdir(tmp_path):
  a, b = configs([{}, {'train.learning_rate': 3.0}])
  with pytest.raises(hidden_units.ConfigError, match='same workdir'):
    hidden_units.train_and_evaluate_many([(a, tmp_path / 'w'), (b, tmp_path / 'w' / '.')])
  assert not (tmp_path / 'w').exists(), 'nothing written'


def test_the_sweep_trains_shareable_runs_in_one_process_per_slot(tmp_path):
  spec = sweep.load_sweep('experiments/hidden_units_ablations.py:quick')
  table = sweep.plan(spec['config'], spec['runs'], spec['seeds'], {}, str(tmp_path))
  (one,) = sweep.batches(spec['config'], table, 1, str(tmp_path))
  assert len(one['runs']) == 12 and one['command'][-1] == f'--runs={tmp_path}/batch-0.json'
  two = sweep.batches(spec['config'], table, 2, str(tmp_path))
  assert [len(j['runs']) for j in two] == [6, 6]
  assert [{r['config'].model.activation for r in j['runs']} for j in two] == [{'tanh'}, {'relu'}]
  assert one['spec']['runs'][1] == {'workdir': table[1]['workdir'], 'overrides': table[1]['every']}
  separate = sweep.batches(spec['config'], table, 1, str(tmp_path), separate=True)
  assert [j['command'] for j in separate] == [r['command'] for r in table], '--separate: a process per run'
  fashion = sweep.plan('experiments/fashion_mnist.py:mlp,quick', sweep.grid_runs(['train.learning_rate=0.1,0.2']),
                       [0], {}, str(tmp_path / 'f'))
  assert [j['command'] for j in sweep.batches('experiments/fashion_mnist.py:mlp,quick', fashion, 1, '')] == [
      r['command'] for r in fashion], 'a trainer without train_and_evaluate_many: a process per run'


def train_py(*args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args], cwd=cwd, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.parametrize('args,fragment', [
    (['--config=hidden_units:quick'], 'pass it without --config'),
    ([], 'cannot be read'),
])
def test_bad_runs_flags_get_one_line(tmp_path, args, fragment):
  proc = train_py(f'--runs={tmp_path}/missing.json', *args)
  assert_one_line_error(proc, fragment)


@pytest.mark.parametrize('spec,fragment', [
    ({'config': QUICK, 'runs': []}, 'at least one run'),
    ({'config': 'fashion_mnist:mlp', 'runs': [{'workdir': 'w'}]}, 'trains one run per process'),
    ({'config': QUICK, 'runs': [{'workdir': 'w', 'overrides': {'train.epochz': 1}}]}, 'epochz'),
])
def test_bad_runs_files_get_one_line(tmp_path, spec, fragment):
  (tmp_path / 'runs.json').write_text(json.dumps(spec))
  assert_one_line_error(train_py(f'--runs={tmp_path}/runs.json', cwd=tmp_path), fragment)
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_train_py_runs_file_trains_and_reports_every_run(tmp_path):
  runs = [{'workdir': str(tmp_path / name), 'overrides': {**SHORT, **s}}
          for name, s in (('a', {}), ('b', {'model.weight_init': 'he'}))]
  (tmp_path / 'runs.json').write_text(json.dumps({'config': QUICK, 'runs': runs}))
  proc = train_py(f'--runs={tmp_path}/runs.json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '2 runs of' in proc.stdout and 'trained together' in proc.stdout
  for name in 'ab':
    assert (tmp_path / name / 'results.md').stat().st_size > 0 and (tmp_path / name / 'claims.json').exists()
  config = json.loads((tmp_path / 'b' / 'config.json').read_text())
  assert config['model']['weight_init'] == 'he' and config['train']['epochs'] == 4


def drawn_files(workdir):
  names = ['results.md', 'claims.json'] + [f'figures/{f}' for f in sorted(os.listdir(os.path.join(workdir, 'figures')))]
  return {name: open(os.path.join(workdir, name), 'rb').read() for name in names}


@pytest.mark.slow
def test_reports_started_as_runs_are_trained_and_drawn_by_workers_equal_each_drawn_alone(tmp_path):
  """As train.py reports: each run's report starts as it is trained, from what the trainer holds in memory, its
  figures drawn by worker processes while its files and the next run's are written; each workdir's lines,
  results.md, claims and figures are byte for byte what render() alone draws, here, from the files."""
  pairs = [(c, str(tmp_path / f'run{i}')) for i, c in enumerate(configs([{}, {'model.weight_init': 'he'},
                                                                           {'train.learning_rate': 3.0}]))]
  started = {}
  with drawing.Pool([hidden_units_report.FIGURES], workers=2) as pool:
    def trained(c, w, loaded):
      assert not os.path.exists(os.path.join(w, 'results.json')), 'started before the files are written'
      started[w] = report.start(c, w, pool, loaded)

    hidden_units.train_and_evaluate_many(pairs, trained=trained)
    assert list(started) == [w for _, w in pairs], 'each run started as it was trained, in order'
    many = [started[w]() for _, w in pairs]
  drawn = {w: drawn_files(w) for _, w in pairs}
  assert len(drawn[pairs[0][1]]) == 7, 'results.md, claims.json and five figures'
  for (c, w), lines in zip(pairs, many):
    assert lines == report.render(c, w)
    assert drawn_files(w) == drawn[w], w
