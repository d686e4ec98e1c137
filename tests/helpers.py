"""What several test modules share: the checkout's root, the environment a user's run gets, running the entry
points, and the checks of the one-line error promise."""
import hashlib
import json
import os
import re
import subprocess
import sys

from experiments import alexnet_imagenet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = 'experiments/hidden_units.py:quick'
# The runs the tests start get the devices train.py chooses for a user (one CPU device for data-parallel
# training), not the 8 CPU devices conftest.py gives the test process itself.
USER_ENV = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
# what a run prints to a log as it trains
PROGRESS_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]+\] step \d+/\d+ ')


def train(*args, timeout=300, env=None):
  """train.py with `args`, finished: its CompletedProcess."""
  return subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env)


def evaluate(*args):
  """eval.py with `args`, finished: its CompletedProcess."""
  return subprocess.run([sys.executable, 'eval.py', *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def snapshot(d):
  """{relative path: sha256} of every file under d."""
  out = {}
  for base, _, names in os.walk(d):
    for f in names:
      p = os.path.join(base, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def message_lines(stderr):
  """The lines of stderr other than progress lines (a run that stops after training started printed some)."""
  return [l for l in stderr.splitlines() if l.strip() and not PROGRESS_LINE.match(l)]


def assert_one_line_error(proc, *fragments):
  """proc ended with exit status 2 and one line `error: ...` holding every fragment, no traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = message_lines(proc.stderr)
  assert len(lines) == 1, f'expected one line, got:\n{proc.stderr}'
  assert lines[0].startswith('error: ') and 'Traceback' not in proc.stderr
  for f in fragments:
    assert f in lines[0], (f, lines[0])


def logged_step(workdir):
  """The last step metrics.jsonl records (0 before the first row)."""
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return max([json.loads(l)['step'] for l in f if l.strip()], default=0)
  except (OSError, ValueError):
    return 0


def data_cfg(tfds_dir, **kw):
  """AlexNet's data section (every key the ImageNet dataset reads, as the experiment sets it) on fake images in
  tfds_dir, with `kw` overriding."""
  cfg = alexnet_imagenet.get_config().data
  cfg.update({'tfds_dir': str(tfds_dir), 'fake_images': 12, 'num_validation': 0, **kw})
  return cfg
