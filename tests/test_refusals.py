"""Bad input through the real command line: each refusal is one line on stderr, exit status 2, no traceback, and
nothing written (a new workdir is not created; an existing one keeps every byte). The checks that need no data
come first in every trainer, so these run in seconds and would fail if a check moved after data loading."""
import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import assert_one_line_error
from tests.helpers import evaluate
from tests.helpers import message_lines
from tests.helpers import QUICK
from tests.helpers import ROOT
from tests.helpers import snapshot
from tests.helpers import train

CNN = 'experiments/fashion_mnist.py:cnn,quick'
MLP = 'experiments/fashion_mnist.py:mlp,quick'


@pytest.mark.parametrize('args,fragments', [
    (['--config=experiments/nope.py', '--config.seed=1'], ['experiments/nope.py does not exist']),
    ([f'--config={QUICK}', '--config.model.hidden_units='], ['model.hidden_units must be whole numbers >= 1',
                                                              '--config.model.hidden_units=2,10']),
    (['--config=', '--config.seed=1'], ['--config is empty', '--config=experiments/NAME.py']),
    ([f'--config={QUICK}', '--config.trian.epochs=3'], ["unknown config key 'trian.epochs'",
                                                        'did you mean train.epochs?', '--show_config']),
    ([f'--config={QUICK}', 'config.train.epochs=3'], ["unexpected argument 'config.train.epochs=3'",
                                                      'did you mean --config.train.epochs=3']),
    ([f'--config={CNN}', '--config.model.conv=32,5'], ['model.conv (32, 5) must be (features, kernel, stride)',
                                                       '--config.model.conv="((32, 5, 1), (64, 5, 1))"']),
    ([f'--config={MLP}', '--config.train.optimizer=adamw'], ["train.optimizer 'adamw' is unknown"]),
    ([f'--config={QUICK}', '--config.train.layout=lanes'], ["train.layout 'lanes' is unknown"]),
    ([f'--config={QUICK}', '--config.train.layout=models_last', '--config.train.weight_decay=0.001'],
     ['train.layout=models_last trains without weight decay', '--config.train.layout=auto']),
    ([f'--config={MLP}', '--config.train.lr_schedule=linear'], ["train.lr_schedule 'linear' is unknown"]),
    ([f'--config={MLP}', '--config.train.learning_rate=-1.0'], ['train.learning_rate must be > 0']),
    ([f'--config={MLP}', '--config.model.name=vgg'], ["model.name 'vgg' is unknown"]),
    ([f'--config={MLP}', '--config.data.name=cifar10'], ["data.name 'cifar10' is unknown"]),
    ([f'--config={CNN}', '--config.model.pool=median'], ["model.pool 'median' is unknown"]),
    ([f'--config={MLP}', '--config.model.dropout=1.5'], ['model.dropout must be in [0, 1)']),
    ([f'--config={MLP}', '--config.train.batch_size=100'], ['does not split over 8 devices']),
    ([f'--config={QUICK}', '--config.train.learning_rate=inf'], ['train.learning_rate=inf is not a finite number']),
    ([f'--config={MLP}', '--config.train.weight_decay=nan'], ['train.weight_decay=nan is not a finite number']),
])
def test_config_errors_come_before_data_and_writes(tmp_path, args, fragments):
  """The data directory is empty, so a check that ran after data loading would fail with another message."""
  data = [f'--config.data.tfds_dir={tmp_path}/tfds'] if 'fashion_mnist' in args[0] else []
  proc = train(*args, f'--workdir={tmp_path}/w', *data)
  assert_one_line_error(proc, *fragments)
  assert not os.path.exists(tmp_path / 'w'), 'a refused run writes nothing'


def test_a_foreign_directory_is_not_adopted(tmp_path):
  workdir = tmp_path / 'notes'
  workdir.mkdir()
  (workdir / 'analysis.ipynb').write_text('{}')
  before = snapshot(workdir)
  assert_one_line_error(train(f'--config={QUICK}', f'--workdir={workdir}'), 'is not empty (analysis.ipynb)',
                        'no config.json')
  assert snapshot(workdir) == before


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('refusals') / 'hu')
  proc = train(f'--config={QUICK}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  return workdir


def damaged_copy(src, dst, name, content):
  subprocess.run(['cp', '-r', src, str(dst)], check=True)
  path = os.path.join(dst, name)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(content(data))
  return dst


@pytest.mark.parametrize('script,name,content,extra,fragments', [
    ('eval.py', 'params.npz', lambda b: b[:len(b) // 2], [], ['params.npz cannot be read']),
    ('eval.py', 'results.json', lambda b: b[:len(b) // 2], [], ['results.json cannot be read']),
    ('eval.py', 'results.json', lambda b: b'{}', [], ['results.json holds no records']),
    ('eval.py', 'config.json', lambda b: b, ['--fresh_points=-5'], ['--fresh_points must be >= 0']),
    ('train.py', 'metrics.jsonl', lambda b: b.replace(b'\n', b'\n{"step": 3, oops\n', 1), [],
     ['line 2 of', 'metrics.jsonl is not a JSON object']),
])
def test_damaged_workdirs_get_one_line_and_keep_every_byte(trained, tmp_path, script, name, content, extra,
                                                            fragments):
  workdir = damaged_copy(trained, tmp_path / 'copy', name, content)
  before = snapshot(workdir)
  run = evaluate if script == 'eval.py' else train
  assert_one_line_error(run(f'--config={QUICK}', f'--workdir={workdir}', *extra), *fragments)
  assert snapshot(workdir) == before


def test_results_are_as_readable_as_the_metrics(trained):
  """Every file a run writes gets the permissions the umask gives (mkstemp's 0600 would hide results from
  collaborators on a shared cluster)."""
  modes = {f: os.stat(os.path.join(trained, f)).st_mode & 0o777
           for f in ('config.json', 'results.json', 'results.md', 'metrics.jsonl', 'params.npz')}
  assert len(set(modes.values())) == 1 and modes['results.json'] & 0o044 == 0o044, modes


@pytest.mark.slow
def test_two_runs_on_one_workdir(tmp_path):
  """The second run stops at once naming the first; the first finishes with each metrics row once."""
  workdir = tmp_path / 'shared'
  first = subprocess.Popen([sys.executable, 'train.py', f'--config={QUICK}', f'--workdir={workdir}'], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    lock = workdir / '.lock'
    while first.poll() is None and not (lock.exists() and lock.read_text()):
      time.sleep(0.05)
    second = train(f'--config={QUICK}', f'--workdir={workdir}')
    assert_one_line_error(second, f'is in use by process {first.pid} on ', 'wait for that run to end')
  finally:
    _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-2000:]
  steps = [json.loads(l)['step'] for l in open(workdir / 'metrics.jsonl')]
  assert len(steps) == len(set(steps)), 'each metrics row once'


def test_diverged_hidden_units_nets_stop_the_run_in_one_line(tmp_path):
  """A step size that makes the nets diverge ends the run naming the nets and the epoch, instead of a results.json
  of NaNs whose claims table counts diverged nets."""
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/w', '--config.train.learning_rate=1e38')
  assert_one_line_error(proc, 'nets diverged by epoch 1 (training loss not finite: corner linear seed 1',
                        'lower --config.train.learning_rate')
  assert not os.path.exists(tmp_path / 'w' / 'results.json')


@pytest.mark.parametrize('limit_kib,written', [(4, 'tensorboard/events.out.tfevents.'),
                                               (20, 'figures/boundaries_corner.png')])
def test_a_full_disk_while_writing_results_gets_one_line(tmp_path, limit_kib, written):
  """A file-size limit stands in for a full disk: appending to the logs (the event file, whose config record makes
  it the first past 4 KiB; metrics.jsonl appends through the same function), or writing the arrays, figures and
  results (atomic writes), fails with one line naming the file; the files before it are kept."""
  limited = ['bash', '-c', f'ulimit -f {limit_kib} && exec "$@"', 'bash', sys.executable, 'train.py',
             f'--config={QUICK}', f'--workdir={tmp_path}/w']
  proc = subprocess.run(limited, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert_one_line_error(proc, f'could not write {tmp_path}/w/{written}', '(File too large)',
                        'run the same command again')
  assert os.path.exists(tmp_path / 'w' / 'config.json')
  assert not [f for f in os.listdir(tmp_path / 'w') if f.startswith('.tmp-')], 'no half-written file left'


def test_sweep_sizes_beyond_memory_are_refused_with_the_estimate(tmp_path):
  proc = train(f'--config={QUICK}', f'--workdir={tmp_path}/w', '--config.num_seeds=1000000000')
  assert_one_line_error(proc, 'this sweep of 10,000,000,000 nets needs about', 'run fewer seeds')
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('arg,overrides', [('quick', {}), (None, {}), ('quick', {'claims.zero_init': False}),
                                           (None, {'model.include_linear': False, 'model.weight_init': 'zeros'})])
def test_the_size_estimate_counts_the_nets_the_sweep_trains(arg, overrides):
  from experiments import hidden_units as config_lib  # noqa: PLC0415
  from trainnets.training import hidden_units  # noqa: PLC0415

  c = config_lib.get_config(arg)
  for k, v in overrides.items():
    section, key = k.split('.')
    c[section][key] = v
  assert hidden_units.num_models(c) == sum(len(m) for m in hidden_units.models_for(c).values())


def test_json_lists_where_objects_belong_get_one_line(trained, tmp_path):
  """config.json or results.json holding a JSON list (an edit, a bad copy): one line, not an AttributeError."""
  for name in ('config.json', 'results.json'):
    workdir = tmp_path / name.split('.')[0]
    subprocess.run(['cp', '-r', trained, str(workdir)], check=True)
    (workdir / name).write_text('[1, 2]')
    before = snapshot(workdir)
    proc = evaluate(f'--config={QUICK}', f'--workdir={workdir}')
    assert_one_line_error(proc, f'{workdir}/{name}')
    assert snapshot(workdir) == before


def test_jax_platforms_without_that_platform_gets_one_line(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', f'--config={QUICK}', f'--workdir={tmp_path}/w'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cuda'})
  assert_one_line_error(proc, 'JAX could not start a backend for JAX_PLATFORMS=cuda', 'unset JAX_PLATFORMS')
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('content,fragment', [
    ('x = 1\n', 'defines no get_config(arg)'),
    ('def get_config(arg=None):\n  raise RuntimeError("no such variant")\n',
     'could not be loaded (RuntimeError: no such variant)'),
    ('import no_such_module\n', 'could not be imported (ModuleNotFoundError'),
])
def test_a_config_file_that_cannot_give_a_config_gets_one_line(tmp_path, content, fragment):
  """Checked by loading the file before the flags library does, not by reading its exception's text."""
  path = tmp_path / 'config.py'
  path.write_text(content)
  assert_one_line_error(train(f'--config={path}', f'--workdir={tmp_path}/w', '--config.seed=1'), fragment)
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('content', ['def get_config(:\n', '# Title\n\nNot Python at all.\n'])
def test_a_config_file_that_is_not_python_gets_one_line(tmp_path, content):
  path = tmp_path / 'config.py'
  path.write_text(content)
  assert_one_line_error(train(f'--config={path}', f'--workdir={tmp_path}/w'), f'--config={path} is not a Python file',
                        'defines get_config(arg)')
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.slow
@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_a_signal_stops_the_hidden_units_run_at_the_next_epoch(tmp_path, sig):
  """Ctrl-C (or a scheduler's SIGTERM) stops the run in one line at the end of the epoch under way, every time:
  a KeyboardInterrupt raised inside a garbage-collection callback was swallowed and training went on to exit 0."""
  import signal  # noqa: PLC0415

  proc = subprocess.Popen([sys.executable, 'train.py', f'--config={QUICK}', f'--workdir={tmp_path}/w',
                           '--config.train.epochs=2000', '--config.claims.at_epoch=10'], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / 'w' / 'metrics.jsonl'
  deadline = time.time() + 120
  while (not metrics.exists() or not metrics.read_text().strip()) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(getattr(signal, sig))
  _, err = proc.communicate(timeout=120)
  lines = message_lines(err)
  assert proc.returncode == 130 and len(lines) == 1, err[-2000:]
  assert lines[0].startswith(f'{sig}: stopped at epoch') and 'run the same command to train it again' in lines[0]
  assert not (tmp_path / 'w' / 'results.json').exists()


@pytest.mark.parametrize('free_kib,fragment', [
    (100 * 1024, 'only 100 MiB are free'),
    (50 * 1024 * 1024, 'is a package index reachable'),
])
def test_make_names_a_full_disk_when_pip_cannot_install(tmp_path, free_kib, fragment):
  """`make setup` where pip fails: with little space free it says so, instead of blaming the package index."""
  fake = tmp_path / 'bin'
  fake.mkdir()
  python = fake / 'python3'
  python.write_text('#!/bin/sh\n'
                    'case "$*" in\n'
                    '  "-m venv "*) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;\n'
                    '  *"-r requirements.txt"*) echo "ERROR: [Errno 28] No space left on device" >&2; exit 1 ;;\n'
                    'esac\n')
  (fake / 'df').write_text('#!/bin/sh\n'
                           'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                           f'echo "/dev/vda 1000000000 1 {free_kib} 99% /"\n')
  for f in (python, fake / 'df'):
    f.chmod(0o755)
  venv = tmp_path / 'venv'
  out = subprocess.run(['make', '--no-print-directory', 'setup', f'PYTHON={python}', f'VENV={venv}'], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, 'PATH': f'{fake}:{os.environ["PATH"]}'},
                       check=False)
  assert out.returncode != 0
  errors = [line for line in out.stdout.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and fragment in errors[0], out.stdout + out.stderr
  assert not (venv / '.installed').exists()
