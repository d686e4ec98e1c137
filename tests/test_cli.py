"""The command line, end to end: the quick config's outputs, and one clear line for every bad input."""
import json
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import assert_one_line_error
from tests.helpers import evaluate
from tests.helpers import PROGRESS_LINE
from tests.helpers import QUICK
from tests.helpers import ROOT
from tests.helpers import snapshot
from tests.helpers import train
from trainnets.training import cli
from trainnets.training import process


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('quick') / 'run')
  proc = train(f'--config={QUICK}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_quick_run_writes_every_artefact(quick_run):
  workdir, proc = quick_run
  for name in ('config.json', 'metrics.jsonl', 'results.json', 'results.md', 'curves.npz', 'params.npz'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  figures = os.listdir(os.path.join(workdir, 'figures'))
  assert {'boundaries_corner.png', 'boundaries_stripes.png', 'accuracy_vs_units.png',
          'training_curves.png', 'boundaries_all_tasks.png'} <= set(figures)
  for f in figures:
    with open(os.path.join(workdir, 'figures', f), 'rb') as fh:
      assert fh.read(8) == b'\x89PNG\r\n\x1a\n', f
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['experiment'] == 'hidden_units' and config['model']['hidden_units'] == [2, 10]
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert lines and all({'step', 'epoch', 'depth', 'train_loss_mean', 'learning_rate', 'model_updates_per_s'} <= set(l)
                       for l in lines)
  assert lines[0]['learning_rate'] == pytest.approx(1.0 / (1 + 99 / 1000)), 'eta_k of epoch 1\'s last update, k = 99'
  out = proc.stdout.splitlines()
  assert out[0] == 'config (resolved):' and '  experiment: hidden_units' in out, 'the log starts with the config'
  summary = next(i for i, l in enumerate(out) if not l.startswith('  ') and i)
  assert 'models in' in out[summary], out[summary:]
  # the TensorBoard events: the per-epoch scalars and the config, as the classifier writes them
  (events,) = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert events.startswith('events.out.tfevents.')
  # stderr is a pipe here, as in a SLURM log: plain progress lines, the first after one epoch, the last at the end
  progress = [l for l in proc.stderr.splitlines() if PROGRESS_LINE.match(l) and '[hidden units: ' in l]
  # the first line, after the first epoch (its compilation included), has no ETA; later ones do
  assert re.search(r'step 1/\d+ .* model-updates/s elapsed \d+:\d\d$', progress[0]), progress
  assert all(re.search(r' eta \d+:\d\d$', l) for l in progress[1:-1]), progress
  assert re.search(r'step (\d+)/\1 \(100.0%\) epoch 12/12 loss [\d.]+ lr [\d.]+ ', progress[-1]), progress


def test_quick_run_results_records(quick_run):
  workdir, _ = quick_run
  results = json.load(open(os.path.join(workdir, 'results.json')))
  records = results['records']
  # 2 tasks x 4 seeds x (linear + 2 widths) + zero-init 2 tasks x 2 widths x 4 seeds
  assert len(records) == 2 * 4 * 3 + 16 == results['num_models']
  required = {'task', 'hidden_units', 'depth', 'init', 'seed', 'epochs', 'train_accuracy', 'test_accuracy'}
  assert all(required <= set(r) for r in records)
  assert {r['init'] for r in records} == {'lecture', 'zeros'}
  assert all(0.0 <= r['train_accuracy'] <= 1.0 and 1 <= r['epochs'] <= 12 for r in records)
  claims = json.load(open(os.path.join(workdir, 'claims.json')))['claims']
  assert [c['claim'] for c in claims], 'claims.json lists the measured claims'
  md = open(os.path.join(workdir, 'results.md')).read()
  assert '| claim | the lecture\'s words | runs | measured | criterion | holds |' in md
  assert 'figures/accuracy_vs_units.png' in md


def test_the_report_redraws_a_finished_workdir_without_training(quick_run, tmp_path):
  """python -m experiments.report WORKDIR renders results.md, claims.json and the figures from the workdir's files
  alone: a copy with them removed gets them back, the same bytes, and its data files are untouched."""
  workdir, _ = quick_run
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  for name in ('results.md', 'claims.json'):
    (copy / name).unlink()
  shutil.rmtree(copy / 'figures')
  data = {k: v for k, v in snapshot(copy).items()}
  proc = subprocess.run([sys.executable, '-m', 'experiments.report', str(copy)], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'models in' in proc.stdout
  after = snapshot(copy)
  assert {k: after[k] for k in data} == data, 'the report reads the data files, never writes them'
  made = snapshot(workdir)
  for name in ('results.md', 'claims.json', 'figures/accuracy_vs_units.png', 'figures/boundaries_stripes.png'):
    assert after[name] == made[name], name


def test_the_report_of_an_unfinished_or_foreign_directory_is_one_line(quick_run, tmp_path):
  report = lambda d: subprocess.run([sys.executable, '-m', 'experiments.report', str(d)], cwd=ROOT,
                                    capture_output=True, text=True, timeout=60)
  assert_one_line_error(report(tmp_path), 'has no config.json')
  shutil.copy(os.path.join(quick_run[0], 'config.json'), tmp_path / 'config.json')
  assert_one_line_error(report(tmp_path), 'has no results.json')


def test_the_trainer_runs_in_process_as_a_library(quick_run, tmp_path):
  """train_and_evaluate called directly (a debugger can step into it), as flax's train_test.py does: the records
  of train.py's run of the same config."""
  from trainnets.training import hidden_units  # noqa: PLC0415

  out = hidden_units.train_and_evaluate(cli.load_config(QUICK), str(tmp_path / 'w'))
  with open(os.path.join(quick_run[0], 'results.json')) as f:
    assert out['records'] == json.load(f)['records']


@pytest.mark.slow
def test_rerun_with_the_same_config_is_allowed(quick_run):
  workdir, _ = quick_run
  before = json.load(open(os.path.join(workdir, 'results.json')))['records']
  proc = train(f'--config={QUICK}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  after = json.load(open(os.path.join(workdir, 'results.json')))['records']
  assert before == after, 'the same seed and config must give the same numbers'


@pytest.mark.parametrize('args,fragments', [
    (['--config.model.widht=3'], ['unknown config key', 'widht', '--show_config']),
    (['--config.train.learning_rate=fast'], ['learning_rate', 'fast']),
    (['--config.model.hidden_units=2,-4'], ['hidden_units', '>= 1']),
    (['--config.train.learning_rate=-0.1'], ['learning_rate must be > 0']),
    (['--config.train.epochs=0'], ['train.epochs must be >= 1']),
    (['--config.model.activation=swish'], ['activation', 'swish', 'relu']),
])
def test_bad_overrides(tmp_path, args, fragments):
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/w', *args)
  assert_one_line_error(proc, *fragments)
  assert not os.path.exists(f'{tmp_path}/w/results.json')


def test_missing_experiment_file(tmp_path):
  assert_one_line_error(train('--config=experiments/nope.py', f'--workdir={tmp_path}/w'),
                        'experiments/nope.py does not exist', 'experiments/hidden_units.py')


def test_unknown_experiment_argument(tmp_path):
  assert_one_line_error(train('--config=experiments/hidden_units.py:quik', f'--workdir={tmp_path}/w'), 'quik')


@pytest.mark.parametrize('switch', ['KEEP_FREED_MEMORY', 'COMPILATION_CACHE', 'FLAT_THREEFRY', 'QUICK_COMPILE'])
def test_bad_switch_value(tmp_path, switch):
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/w', env={**os.environ, switch: 'yes'})
  assert_one_line_error(proc, f"{switch}='yes'", 'set it to 0')
  assert not os.path.exists(f'{tmp_path}/w')


@pytest.mark.slow
def test_compiled_programs_are_cached_unless_turned_off(quick_run, tmp_path):
  """A run writes its compiled programs to the cache directory, and a run that loads them computes the same
  records; COMPILATION_CACHE=0 writes none."""
  cache = tmp_path / 'cache'
  for run in ('first', 'second'):
    proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/{run}', env={**os.environ,
                                                                          'JAX_COMPILATION_CACHE_DIR': str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(os.listdir(cache)) >= 5, 'every program of the run is cached'
  records = lambda d: json.load(open(os.path.join(d, 'results.json')))['records']
  assert records(tmp_path / 'second') == records(tmp_path / 'first') == records(quick_run[0])
  off = tmp_path / 'off'
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/third', env={**os.environ, 'COMPILATION_CACHE': '0',
                                                                        'JAX_COMPILATION_CACHE_DIR': str(off)})
  assert proc.returncode == 0 and not off.exists()


def test_the_retired_cpu_conv_variable_is_refused(tmp_path):
  """No environment variable chooses behaviour: a CPU_CONV left from older instructions gets one line."""
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/w', env={**os.environ, 'CPU_CONV': 'xla'})
  assert_one_line_error(proc, "CPU_CONV='xla' is no longer read", '--config.model.kernels')
  assert not os.path.exists(f'{tmp_path}/w')


def test_missing_workdir():
  assert_one_line_error(train(f'--config={QUICK}'), '--workdir')


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  assert_one_line_error(train(f'--config={QUICK}', f'--workdir={blocker}/run'), 'cannot write')
  assert blocker.read_text() == 'not a directory'


@pytest.mark.parametrize('config_json,fragment', [
    ({'experiment': 'fashion_mnist'}, "holds results of experiment 'fashion_mnist'"),
    (None, 'another config (train.epochs: 12 -> 13)'),
])
def test_workdir_of_another_run_is_left_alone(quick_run, tmp_path, config_json, fragment):
  src, _ = quick_run
  workdir = tmp_path / 'other'
  subprocess.run(['cp', '-r', src, str(workdir)], check=True)
  if config_json is not None:
    (workdir / 'config.json').write_text(json.dumps(config_json))
  before = snapshot(workdir)
  proc = train(f'--config={QUICK}', f'--workdir={workdir}', '--config.train.epochs=13')
  assert_one_line_error(proc, fragment, 'new --workdir')
  assert snapshot(workdir) == before, 'nothing in the existing workdir may change'


def test_show_config_lists_keys():
  proc = train(f'--config={QUICK}', '--show_config')
  assert proc.returncode == 0 and 'hidden_units' in proc.stdout and 'learning_rate' in proc.stdout


def test_eval_reproduces_results_json(quick_run):
  workdir, _ = quick_run
  proc = evaluate(f'--config={QUICK}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.load(open(os.path.join(workdir, 'eval.json')))
  assert out['max_abs_diff_vs_results_json'] == 0.0
  assert len(out['records']) == json.load(open(os.path.join(workdir, 'results.json')))['num_models']
  assert 'stripes  depth 1  10 units lecture' in proc.stdout


def test_eval_on_fresh_points(quick_run):
  workdir, _ = quick_run
  proc = evaluate(f'--config={QUICK}', f'--workdir={workdir}', '--fresh_points=500')
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.load(open(os.path.join(workdir, 'eval.json')))
  assert out['split'] == '500 fresh points'
  assert all(0 <= r['test_accuracy'] <= 1 for r in out['records'])


def test_eval_bad_workdirs(quick_run, tmp_path):
  assert_one_line_error(evaluate(f'--config={QUICK}', f'--workdir={tmp_path}/none'), 'missing or empty')
  assert_one_line_error(evaluate('--config=experiments/hidden_units.py', f'--workdir={quick_run[0]}'),
                        'another config')
  tampered = tmp_path / 'tampered'
  subprocess.run(['cp', '-r', quick_run[0], str(tampered)], check=True)
  results = json.load(open(tampered / 'results.json'))
  results['records'][0]['test_accuracy'] += 0.25
  (tampered / 'results.json').write_text(json.dumps(results))
  assert_one_line_error(evaluate(f'--config={QUICK}', f'--workdir={tampered}'), 'away from results.json')


# A 45 MB block allocated, written and freed by a worker thread, as XLA:CPU does with a jitted step's
# temporaries; prints the page faults per repetition after the first.
_FAULTS_SCRIPT = """
import ctypes, resource, sys, threading
from trainnets.training import process
print(process.keep_freed_memory() if sys.argv[1] == 'keep' else False)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size, counts = 45 << 20, []
def work():
  for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(max(counts[1:]))
"""


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_keep_freed_memory_removes_the_page_faults_of_large_blocks():
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('MALLOC_') and k not in ('GLIBC_TUNABLES', process.OPT_OUT)}
  env['JAX_PLATFORMS'] = 'cpu'
  runs = {}
  for mode in ('keep', 'default'):
    out = subprocess.run([sys.executable, '-c', _FAULTS_SCRIPT, mode], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    runs[mode] = (out[0] == 'True', int(out[1]))
  pages = (45 << 20) // os.sysconf('SC_PAGE_SIZE')
  assert not runs['default'][0] and runs['default'][1] > pages // 2, runs  # the control: glibc's defaults
  assert runs['keep'][0] and runs['keep'][1] < pages // 20, runs


@pytest.mark.parametrize('environ', [
    {'KEEP_FREED_MEMORY': '0'}, {'MALLOC_TOP_PAD_': '0'}, {'MALLOC_ARENA_MAX': '4'},
    {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, {'JAX_PLATFORMS': 'cuda'}, {'JAX_PLATFORMS': 'tpu,cpu'}])
def test_keep_freed_memory_leaves_user_choices_and_accelerators_alone(environ):
  assert not process.keep_freed_memory(environ, find_spec=lambda name: None)


def test_keep_freed_memory_skips_machines_with_accelerator_plugins():
  assert not process.keep_freed_memory({}, find_spec=lambda name: object() if name == 'jax_cuda12_plugin' else None)


@pytest.mark.parametrize('user,want', [
    ('', f'{process.COUNT_FLAG}=3 {process.COPY_FLAG}=true'),
    ('--xla_dump_to=/d', f'--xla_dump_to=/d {process.COUNT_FLAG}=3 {process.COPY_FLAG}=true'),
    (f'{process.COUNT_FLAG}=8', f'{process.COUNT_FLAG}=8 {process.COPY_FLAG}=true'),
    (f'{process.COPY_FLAG}=false', f'{process.COPY_FLAG}=false {process.COUNT_FLAG}=3')])
def test_xla_flags_add_what_the_user_did_not_set(user, want):
  assert process.xla_flags({'XLA_FLAGS': user}, cores=3) == want

