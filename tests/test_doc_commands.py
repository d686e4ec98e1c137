"""Every shell command in README.md and docs/ works as written: each command of a fenced `sh` block, and each
`python ...` command quoted in the text, is run here in its quick form, or is a synopsis (placeholders such as
NAME or DIR), or says in its comment what it needs that a test machine lacks (`# needs ImageNet`, `# needs SLURM`).

Fast tier: every command is one of those, and each train.py command's config and overrides resolve. Slow tier:
sweeps plan every run (`--dry_run`), launch scripts print what they would run (their DRY_RUN form), each train.py
command trains in its quick form (`:quick` added, the workdir moved under a temporary directory) and each eval.py
command evaluates what the page's train.py command trained. `make reproduce` and `make test` are CI's own commands.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers import USER_ENV
from tests.test_docs import PAGES
from tests.test_docs import text
from trainnets.training import cli

NEEDS = re.compile(r'#.*\bneeds (ImageNet|SLURM|a TPU VM|several machines)')
SYNOPSIS = re.compile(r'\b(NAME|DIR|KEY|VALUE|HOST0|WORKDIR|CHECKOUT)\b|=\.\.\.|\.\.\.\]|--process_id=I\b')


def doc_commands():
  """(page, command, comment) of every command in a fenced sh block (continuation lines joined), then of every
  `python ...` quoted in the page's text."""
  out = []
  for page in PAGES:
    for block in re.findall(r'```sh\n(.*?)```', text(page), re.S):
      for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
        command, _, comment = line.partition('  #') if '  #' in line else line.partition(' # ')
        if command.strip() and not line.lstrip().startswith('#'):
          out.append((page, ' '.join(command.split()), comment.strip()))
    prose = re.sub(r'```.*?```', '', text(page), flags=re.S)
    out += [(page, ' '.join(c.split()), '') for c in re.findall(r'`(python [^`]+)`', prose)]
  first = {}
  for page, command, comment in out:  # a command quoted on several pages runs once
    first.setdefault(command, (page, command, comment))
  return list(first.values())


COMMANDS = doc_commands()


def kind(command, comment):
  """What the harness does with a command: 'make', 'needs', 'synopsis', 'train', 'eval', 'sweep', 'script',
  'bench' (`make bench` runs the benchmarks; here each one's command line must parse)."""
  if NEEDS.search('#' + comment) or command.startswith('python -m trainnets.data.imagenet_store '):
    return 'needs'  # the store is prepared from ImageNet's archives (tests/test_imagenet_store.py: fake ones)
  if SYNOPSIS.search(command):
    return 'synopsis'
  if command.startswith('make '):
    return 'make'
  if command.startswith('DRY_RUN=1 '):
    return 'script'
  if command.startswith('python benchmarks/'):
    return 'bench'
  starts = (('train', 'python train.py '), ('eval', 'python eval.py '), ('sweep', 'python -m experiments.sweep '))
  for k, start in starts:
    if command.startswith(start):
      return k
  return None


def ids(commands):
  return [f'{page}:{command[:60]}' for page, command, _ in commands]


def test_every_command_is_run_or_says_what_it_needs():
  unknown = [(page, command) for page, command, comment in COMMANDS if kind(command, comment) is None]
  assert not unknown, f'commands the harness cannot run; give them a quick form or a "# needs ..." comment: {unknown}'
  assert len(COMMANDS) > 30  # the pages were read


def without_optional(command):
  """The command with its optional [...] parts left out."""
  return re.sub(r'\s\[[^\]]*\]', '', command)


def argv(command, workdirs=None, quick=False):
  """The command as arguments for this Python; with `workdirs` (a directory), each --workdir and --ensemble path
  moved under it; with `quick`, the config's quick form."""
  args = shlex.split(without_optional(command))
  args = [sys.executable if a == 'python' else a for a in args]
  out = []
  for a in args:
    if workdirs and a.startswith(('--workdir=', '--ensemble=')):
      flag, paths = a.split('=', 1)
      a = f'{flag}=' + ','.join(os.path.join(workdirs, p.strip('/').replace('/', '_')) for p in paths.split(','))
    if quick and a.startswith('--config=') and 'quick' not in a:
      a += ',quick' if ':' in a else ':quick'
    out.append(a)
  return out


def run(args, env=USER_ENV):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


TRAIN = [c for c in COMMANDS if kind(c[1], c[2]) == 'train']


@pytest.mark.parametrize('page,command,comment', TRAIN, ids=ids(TRAIN))
def test_a_train_command_resolves_its_config(page, command, comment):
  """Its config file, arguments and every --config.KEY=VALUE resolve as train.py resolves them (in-process)."""
  args = argv(command)
  spec = next(a.split('=', 1)[1] for a in args if a.startswith('--config='))
  overrides = dict(a[len('--config.'):].split('=', 1) for a in args if a.startswith('--config.'))
  assert cli.load_config(spec, overrides).experiment


CHECKED = [c for c in COMMANDS if kind(c[1], c[2]) in ('sweep', 'script', 'bench')]


@pytest.mark.slow
@pytest.mark.parametrize('page,command,comment', CHECKED, ids=ids(CHECKED))
def test_a_sweep_plans_and_a_script_prints_its_command(page, command, comment, tmp_path):
  """Sweeps resolve every run's config and print the plan (--dry_run); launch scripts print what they would run;
  a benchmark parses its command line and lists its flags (--help; absl's exits 1 after the list)."""
  if kind(command, comment) == 'bench':
    proc = run(argv(command) + ['--help'])
    assert proc.returncode in (0, 1) and 'Traceback' not in proc.stderr and '--' in proc.stdout + proc.stderr
    return
  if kind(command, comment) == 'script':
    proc = run(['bash', '-c', command.replace('DRY_RUN=1 ', '', 1)], env=dict(USER_ENV, DRY_RUN='1'))
  else:
    proc = run(argv(command, workdirs=str(tmp_path)) + ['--dry_run'])
  assert proc.returncode == 0, f'{page}: {command}\n{proc.stderr[-2000:]}'
  assert proc.stdout.strip()


SLOW = [c for c in COMMANDS if kind(c[1], c[2]) in ('train', 'eval')]


@pytest.fixture(scope='module')
def quick_workdirs(tmp_path_factory):
  return str(tmp_path_factory.mktemp('doc_commands'))


@pytest.mark.slow
@pytest.mark.parametrize('page,command,comment', SLOW, ids=ids(SLOW))
def test_a_command_runs_in_its_quick_form(page, command, comment, quick_workdirs, fashion_mnist_tfds):
  """Train commands train (in the order of their page), then eval commands evaluate those workdirs."""
  args = argv(command, workdirs=quick_workdirs, quick=True)
  if 'fashion_mnist' in command:
    args.append(f'--config.data.tfds_dir={fashion_mnist_tfds}')
  proc = run(args)
  assert proc.returncode == 0, f'{page}: {" ".join(args)}\n{proc.stderr[-2000:]}'
