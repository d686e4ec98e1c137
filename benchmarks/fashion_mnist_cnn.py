"""CNN training throughput on the CPU: this codebase against the same network in PyTorch, in one run.

  python benchmarks/fashion_mnist_cnn.py [--repeats=5] [--steps=20] [--to_accuracy=0.92] [--conv2_kernel=5]
                                        [--kernels=auto]

The network of the Fashion-MNIST benchmark row "2 Conv+pooling": conv 5x5 32 -> ReLU -> 2x2 max pool -> conv 5x5
64 -> ReLU -> 2x2 max pool -> FC 1024 -> ReLU -> dropout 0.5 -> FC 10, Adam, batch 128, 28x28x1 inputs. Both
train on the same synthetic batches (throughput does not depend on the pixels):
  - this codebase: trainnets/training/classifier.py's jitted, sharded step on the devices train.py gives it (one on a
    CPU-only machine, see CPU_DEVICES in trainnets/training/classifier.py);
  - PyTorch: the same layers (torch.nn, CPU build, all cores), a plain training loop.
Both run in this one process, so both get the glibc malloc settings that train.py makes (trainnets/training/cli.py's
keep_freed_memory: freed memory kept for reuse); KEEP_FREED_MEMORY=0 runs both with glibc's defaults instead.
The JSON says which (`malloc_kept`), and which speed kernels computed this codebase's step (`kernels`, as
--kernels chooses like the config key model.kernels: auto, the default, takes oneDNN's convolutions where `make
onednn` built them; none runs the plain layers; see trainnets/kernels/__init__.py).
Reported: images/s, medians of --repeats timings of --steps steps each, after warm-up. With --to_accuracy, it
also trains experiments/fashion_mnist.py:cnn for real and reports the wall time until the first epoch whose test
accuracy reaches it (needs the Fashion-MNIST files; see docs/fashion_mnist.md). The last line is one JSON object.
--conv2_kernel=1 gives conv2 a 1x1 kernel in both networks, everything else unchanged: the difference from the
default run is what conv2's 5x5 convolution (forward and both gradients) costs each peer.
Needs torch (requirements-bench.txt, installed by `make bench`).
"""
import json
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainnets.training import cli
from trainnets.training import process

try:
  MALLOC_KEPT = process.prepare_cpu(cores=1)  # as train.py does for the classifier; PyTorch here shares the allocator
except cli.UserError as e:
  cli.fail(str(e))

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import timing
from nets import cnn
from trainnets import kernels
from trainnets.training import optim
from trainnets.training import sharding
from trainnets.training import steps as steps_lib

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timings per figure; the median is reported.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Training steps per timing.')
_TO_ACCURACY = flags.DEFINE_float('to_accuracy', 0.0, 'If > 0, also time a real run to this test accuracy.')
_KERNELS = flags.DEFINE_string('kernels', 'auto', 'Speed kernels of this codebase: auto, none or names (as '
                               'model.kernels).')
_CONV2_KERNEL = flags.DEFINE_integer(
    'conv2_kernel', 5, "Side of conv2's kernel in both networks (odd; 5 is the benchmark's network, 1 shows by "
    "difference what conv2 costs).")

BATCH = 128


def arch(conv2_kernel=5):
  return cnn.Arch(conv=((32, 5, 1), (64, conv2_kernel, 1)), dense=(1024,), dropout=0.5)


ARCH = arch()


def median_images_per_s(run_steps, repeats, steps):
  run_steps(2)  # warm-up: compilation, allocator, thread pools
  return BATCH * steps / timing.median_seconds(lambda: run_steps(steps), repeats)


def jax_images_per_s(images, labels, repeats, steps, conv2_kernel, ops):
  import ml_collections  # noqa: PLC0415

  net = arch(conv2_kernel)
  mesh = sharding.data_mesh()
  apply = lambda p, x, train=False, key=None: cnn.apply(p, x, net, train=train, key=key, ops=ops)
  tx = optim.optimizer(ml_collections.ConfigDict(dict(
      optimizer='adam', learning_rate=1e-3, lr_schedule='constant', weight_decay=0.0, momentum=0.0)), 1)
  params = cnn.init(jax.random.PRNGKey(0), net, (28, 28, 1))
  state = jax.device_put(steps_lib.initial_state(params, tx, jax.random.PRNGKey(1)), sharding.replicated(mesh))
  step = steps_lib.make_train_step(apply, tx, mesh)
  batches = [jax.device_put({'image': images[i], 'label': labels[i]}, sharding.batch_sharding(mesh))
             for i in range(len(images))]
  box = {'state': state}

  def run_steps(n):
    for i in range(n):
      box['state'], m = step(box['state'], batches[i % len(batches)])
    jax.block_until_ready(m['loss'])

  return median_images_per_s(run_steps, repeats, steps)


def torch_model(conv2_kernel=5):
  """The same network in torch.nn (NCHW), conv2 with the given odd kernel side."""
  from torch import nn  # noqa: PLC0415

  return nn.Sequential(
      nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, conv2_kernel, padding=conv2_kernel // 2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))


def torch_images_per_s(images, labels, repeats, steps, conv2_kernel):
  import torch  # noqa: PLC0415
  from torch import nn  # noqa: PLC0415

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = torch_model(conv2_kernel)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  xs = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in images]  # NCHW
  ys = [torch.from_numpy(y.astype(np.int64)) for y in labels]

  def run_steps(n):
    for i in range(n):
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(xs[i % len(xs)]), ys[i % len(ys)])
      loss.backward()
      opt.step()

  return median_images_per_s(run_steps, repeats, steps), torch.__version__


def time_to_accuracy(target):
  """Seconds from the start of a real `cnn` run to the end of the first epoch at >= target test accuracy."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as d:
    subprocess.run([sys.executable, 'train.py', '--config=experiments/fashion_mnist.py:cnn', f'--workdir={d}/run'],
                   cwd=root, check=True, stdout=subprocess.DEVNULL)
    with open(f'{d}/run/metrics.jsonl') as f:
      evals = [json.loads(l) for l in f if 'test_accuracy' in l]
  hit = next((e for e in evals if e['test_accuracy'] >= target), None)
  return (hit['wall_s'], hit['epoch']) if hit else (None, None), max(e['test_accuracy'] for e in evals)


def main(argv):
  del argv
  k = _CONV2_KERNEL.value
  if k < 1 or k % 2 == 0:
    cli.fail(f'--conv2_kernel={k}: give an odd kernel side >= 1 (SAME padding keeps the 14x14 maps), e.g. 5 or 1')
  try:
    ops, names = kernels.resolve(_KERNELS.value, 'cpu')
  except kernels.KernelError as e:
    cli.fail(f'--kernels: {e}')
  rng = np.random.default_rng(0)
  images = [rng.standard_normal((BATCH, 28, 28, 1), dtype=np.float32) for _ in range(4)]
  labels = [rng.integers(0, 10, BATCH).astype(np.int32) for _ in range(4)]
  jax_ips = jax_images_per_s(images, labels, _REPEATS.value, _STEPS.value, k, ops)
  print(f'this codebase (JAX {jax.__version__}, {len(jax.devices())} devices): {jax_ips:8.0f} images/s', flush=True)
  torch_ips, torch_version = torch_images_per_s(images, labels, _REPEATS.value, _STEPS.value, k)
  print(f'PyTorch {torch_version} ({os.cpu_count()} threads):        {torch_ips:8.0f} images/s', flush=True)
  print(f'ratio: {jax_ips / torch_ips:.2f}x PyTorch')
  result = {'images_per_s': round(jax_ips), 'torch_images_per_s': round(torch_ips),
            'x_torch': round(jax_ips / torch_ips, 3), 'batch': BATCH, 'conv2_kernel': k, 'repeats': _REPEATS.value,
            'steps': _STEPS.value, 'malloc_kept': MALLOC_KEPT, 'kernels': list(names),
            'jax': jax.__version__, 'torch': torch_version,
            'devices': [str(d) for d in jax.devices()], 'cpu_count': os.cpu_count(),
            'machine': platform.machine(), 'python': platform.python_version()}
  if _TO_ACCURACY.value > 0:
    (seconds, epoch), best = time_to_accuracy(_TO_ACCURACY.value)
    result.update({'to_accuracy': _TO_ACCURACY.value, 'seconds_to_accuracy': seconds, 'epoch_reached': epoch,
                   'best_test_accuracy': best})
    print(f'time to {_TO_ACCURACY.value} test accuracy: {seconds} s (epoch {epoch}); best {best:.4f}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
