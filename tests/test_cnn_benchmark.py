"""benchmarks/fashion_mnist_cnn.py: its --conv2_kernel option (the same change in both networks, or a one-line
refusal), a bad --kernels refused in one line, and, where torch is installed (`make bench`), one tiny run end to
end."""
import json
import subprocess
import sys

import pytest

from tests.helpers import assert_one_line_error
from tests.helpers import ROOT
from tests.helpers import USER_ENV
from trainnets import kernels

SCRIPT = 'benchmarks/fashion_mnist_cnn.py'


def run(*args, env=USER_ENV, **kw):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, **kw)


@pytest.mark.parametrize('kernel', ['4', '0'])
def test_even_or_empty_conv2_kernel_is_refused_in_one_line(kernel):
  assert_one_line_error(run(SCRIPT, f'--conv2_kernel={kernel}', timeout=120), f'--conv2_kernel={kernel}', 'odd')


@pytest.mark.slow
def test_conv2_kernel_changes_only_conv2():
  """The JAX network (imported in a child: the module sets up malloc and XLA_FLAGS as train.py does)."""
  code = ('import sys, json; sys.argv = ["x"]; import jax; from benchmarks import fashion_mnist_cnn as b; '
          'from nets import cnn; shapes = lambda k: jax.tree.map(lambda a: list(a.shape), '
          'cnn.init(jax.random.PRNGKey(0), b.arch(k), (28, 28, 1))); '
          'print(json.dumps([b.arch() == b.ARCH, shapes(5), shapes(1)]))')
  proc = run('-c', code, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  same, five, one = json.loads(proc.stdout.strip().splitlines()[-1])
  assert same is True
  assert five['conv2']['W'] == [5, 5, 32, 64] and one['conv2']['W'] == [1, 1, 32, 64]
  assert {k: v for k, v in five.items() if k != 'conv2'} == {k: v for k, v in one.items() if k != 'conv2'}


def test_torch_network_matches_with_conv2_kernel():
  torch = pytest.importorskip('torch')
  code = ('import sys; sys.argv = ["x"]; import torch; from benchmarks import fashion_mnist_cnn as b; '
          'm = b.torch_model(1); print(list(m[3].weight.shape), list(m(torch.zeros(2, 1, 28, 28)).shape))')
  proc = run('-c', code, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == '[64, 32, 1, 1] [2, 10]', torch.__version__


@pytest.mark.slow
def test_tiny_run_end_to_end_with_torch():
  pytest.importorskip('torch')
  proc = run(SCRIPT, '--conv2_kernel=1', '--repeats=1', '--steps=1', timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['conv2_kernel'] == 1 and result['images_per_s'] > 0 and result['torch_images_per_s'] > 0
  assert result['kernels'] == list(kernels.names_for('auto', 'cpu'))


def test_a_kernel_setting_it_cannot_honour_is_one_line():
  assert_one_line_error(run(SCRIPT, '--kernels=fast_conv', timeout=120), "--kernels: model.kernels='fast_conv'",
                        'is not a kernel')
