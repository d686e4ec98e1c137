"""The project is an installed package: its modules import from any directory, and docs/notebook.md's code runs as
written from outside the checkout."""
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers import USER_ENV

# what a process started outside the checkout sees: no PYTHONPATH, no pytest `pythonpath`
OUTSIDE_ENV = {k: v for k, v in USER_ENV.items() if k != 'PYTHONPATH'}


def test_the_packages_import_from_any_directory(tmp_path):
  code = ('import importlib.metadata, nets, experiments, trainnets.training.classifier as c; '
          'print(importlib.metadata.version("trainnets")); print(c.__file__); print(nets.__file__)')
  proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True,
                        env=OUTSIDE_ENV, check=True)
  version, classifier, nets = proc.stdout.split()
  assert version and classifier.startswith(str(ROOT)) and nets.startswith(str(ROOT)), 'pip install -e . (see Makefile)'


def test_a_config_is_named_the_same_way_from_any_directory(tmp_path):
  for spec in ('experiments/hidden_units.py:quick', 'hidden_units:quick', 'hidden_units.py:quick'):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), f'--config={spec}', '--show_config'],
                          cwd=tmp_path, capture_output=True, text=True, env=OUTSIDE_ENV)
    assert proc.returncode == 0 and 'experiment: hidden_units' in proc.stdout, (spec, proc.stderr[-500:])
  with open(os.path.join(ROOT, 'experiments', 'hidden_units.py')) as f:
    (tmp_path / 'mine.py').write_text(f.read())
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--config=mine.py:quick', '--show_config'],
                        cwd=tmp_path, capture_output=True, text=True, env=OUTSIDE_ENV)
  assert proc.returncode == 0, 'a config file in the working directory is found first'


def notebook_code():
  with open(os.path.join(ROOT, 'docs', 'notebook.md')) as f:
    return '\n'.join(re.findall(r'```python\n(.*?)```', f.read(), re.S))


def test_the_notebook_page_has_code():
  code = notebook_code()
  assert 'train_and_evaluate' in code and 'ocp.CheckpointManager' in code and 'jax.grad' in code


@pytest.mark.slow
def test_the_notebook_page_runs_as_written(tmp_path, fashion_mnist_tfds):
  (tmp_path / 'notebook.py').write_text(notebook_code())
  proc = subprocess.run([sys.executable, 'notebook.py'], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                        env=dict(OUTSIDE_ENV, TFDS_DATA_DIR=fashion_mnist_tfds))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'circle, 16 hidden units: test accuracy' in proc.stdout and 'scores of 4 blank images: (4, 10)' in proc.stdout
  assert (tmp_path / 'notebook_mlp' / 'results.md').exists()
