"""The codebase's shape: dependencies point down the layers, configs are light, models and datasets are found by
name. A change that breaks one of these fails here, not in a reader's head."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each layer and the project modules it may import (entry points above all of them may import anything). Names are
# as imported: trainnets.training, trainnets.errors, ... The shared modules of trainnets (config_keys, errors,
# files, named, quick_compile, tf_host) import nothing of the project but trainnets.errors.
SHARED = {f'trainnets.{m}' for m in ('config_keys', 'errors', 'files', 'named', 'quick_compile', 'tf_host')}
MAY_IMPORT = {
    'experiments': {'experiments', 'trainnets.training', 'trainnets.data', 'nets', 'trainnets.kernels'} | SHARED,
    'trainnets.training': {'trainnets.training', 'trainnets.data', 'nets', 'trainnets.kernels'} | SHARED,
    'trainnets.kernels': {'trainnets.kernels', 'nets'} | SHARED,
    'trainnets.data': {'trainnets.data'} | SHARED,
    'nets': {'nets'} | SHARED,
}
PROJECT = set(MAY_IMPORT) | SHARED | {'benchmarks', 'tests', 'train', 'eval'}


def _project_name(module):
  """The layer or shared module that `module` (a dotted import) belongs to, or None outside the project."""
  parts = module.split('.')
  name = '.'.join(parts[:2]) if parts[0] == 'trainnets' else parts[0]
  return name if name in PROJECT or name == 'trainnets' else None


def project_imports(path):
  """The project layers and shared modules a module imports (at any depth of its code, lazily or not)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f'{node.module}.{a.name}' if node.module == 'trainnets' else node.module for a in node.names]
    else:
      names = []
    out |= {n for n in map(_project_name, names) if n}
  return out


@pytest.mark.parametrize('layer', sorted(MAY_IMPORT))
def test_dependencies_point_down(layer):
  wrong = {str(p.relative_to(ROOT)): sorted(project_imports(p) - MAY_IMPORT[layer])
           for p in sorted((ROOT / layer.replace('.', '/')).rglob('*.py'))}
  assert not {k: v for k, v in wrong.items() if v}, f'{layer} may import only {sorted(MAY_IMPORT[layer])}'


def test_the_layering_test_sees_imports():
  """The check above reads both import forms; an upward import would be caught."""
  assert project_imports(ROOT / 'trainnets/data/sampler.py') <= SHARED
  assert {'trainnets.errors', 'trainnets.data'} <= project_imports(ROOT / 'trainnets/training/classifier.py')
  assert 'trainnets.training' not in MAY_IMPORT['trainnets.data']


def test_shared_modules_import_nothing_of_the_project():
  """trainnets.errors imports nothing of the project; the other shared modules at most trainnets.errors."""
  for name in SHARED:
    allowed = set() if name == 'trainnets.errors' else {'trainnets.errors'}
    assert not project_imports(ROOT / f'{name.replace(".", "/")}.py') - allowed, name


@pytest.mark.parametrize('config', ['hidden_units', 'fashion_mnist', 'alexnet_imagenet'])
def test_a_config_is_light_to_import(config):
  """Reading an experiment's config loads no trainer, no TensorFlow, no orbax and no plotting."""
  code = (f'import sys, experiments.{config} as c; c.get_config(); '
          'print(sorted(m for m in sys.modules if ".".join(m.split(".")[:2 if m.startswith("trainnets.") else 1]) in '
          '("training", "tensorflow", "orbax", "matplotlib", "tensorflow_datasets")))')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'


def test_models_datasets_and_trainers_are_found_by_name():
  import nets  # noqa: PLC0415
  from trainnets import data  # noqa: PLC0415
  from trainnets import training  # noqa: PLC0415
  from trainnets.errors import ConfigError  # noqa: PLC0415

  assert nets.module('alexnet').__name__ == 'nets.alexnet'
  assert data.module('imagenet2012').__name__ == 'trainnets.data.imagenet'
  assert training.trainer('hidden_units').__name__ == 'trainnets.training.hidden_units'
  for find, name, listed in ((nets.module, 'resnet', 'alexnet, cnn'), (nets.module, 'layers', 'alexnet, cnn'),
                             (data.module, 'mnist', 'fashion_mnist, imagenet2012'),
                             (training.trainer, 'gan', 'classifier, hidden_units')):
    with pytest.raises(ConfigError, match=f'{name}.*choose one of {listed} '):
      find(name)


def test_the_suite_computes_on_8_cpu_devices_whatever_the_machine_has():
  """conftest.py pins the CPU platform: a GPU node's `make test` runs what CI runs, even with JAX_PLATFORMS=cuda."""
  import jax  # noqa: PLC0415

  assert jax.default_backend() == 'cpu' and len(jax.devices()) == 8
  code = ('import os, tests.conftest, jax; '
          'print(jax.default_backend(), len(jax.devices()), os.environ["JAX_PLATFORMS"])')
  env = {**os.environ, 'JAX_PLATFORMS': 'cuda,cpu', 'XLA_FLAGS': ''}
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
  assert out.stdout.split() == ['cpu', '8', 'cpu']
