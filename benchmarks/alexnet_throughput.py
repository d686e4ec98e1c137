"""AlexNet training throughput: this codebase's step against torchvision's AlexNet in PyTorch, in one run.

  python benchmarks/alexnet_throughput.py                 # GPU: bf16, batch 256, every network below
  python benchmarks/alexnet_throughput.py --batch=8 --steps=3 --repeats=3   # a CPU: shows it works end to end

Networks (nets/alexnet.py), each trained by trainnets/training/steps.py's sharded, jitted step (the one train.py runs)
on synthetic data already on the device, SGD with momentum and weight decay as the paper:
  paper_lrn      the 2012 network: grouped conv2/4/5 and local response normalisation (the default config)
  paper          the same without normalisation
  single_lrn     the 2012 widths in one tower, with normalisation
  single         one tower, no normalisation
  torchvision    torchvision's variant (64-192-384-256-256, no normalisation)
Peers, in the same process: torchvision.models.alexnet in PyTorch eager and with torch.compile (bf16 autocast on
a GPU, float32 on a CPU); if torchvision is not installed, the same layers built from torch.nn.

Reported per network: images/s (median of --repeats timings of --steps steps, after warm-up), and model FLOP
utilisation: 3 x 2 x multiply-adds per image (forward and backward) x images/s over the device's peak dense
bf16 rate (known GPUs only). The last line is one JSON object. Imports neither TensorFlow nor TFDS, so it runs
on a bare machine with jax, optax, torch (and torchvision).
"""
import argparse
import dataclasses
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import optax

from benchmarks import timing
from nets import alexnet
from trainnets import kernels
from trainnets.training import sharding
from trainnets.training import steps as steps_lib

NETWORKS = {
    'paper_lrn': alexnet.Arch(),
    'paper': alexnet.Arch(lrn=False),
    'single_lrn': alexnet.Arch(groups=(1,) * 5),
    'single': alexnet.Arch(groups=(1,) * 5, lrn=False),
    'torchvision': alexnet.Arch.torchvision(),
}
# Peak dense bf16 tensor-core rates (FLOP/s) of the GPUs these benchmarks run on, by device_kind substring.
PEAK_BF16 = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12}


def peak_flops(device):
  return next((v for k, v in PEAK_BF16.items() if k in device.device_kind), None)


def jax_images_per_s(arch, batch, steps, repeats, ops):
  mesh = sharding.data_mesh()
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
  apply = lambda p, x, train=False, key=None: alexnet.apply(p, x, arch, train=train, key=key, ops=ops)

  def new_state():
    return steps_lib.initial_state(alexnet.init(jax.random.PRNGKey(0), arch), tx, jax.random.PRNGKey(1))

  layout = sharding.state_shardings(jax.eval_shape(new_state), mesh)
  box = {'state': jax.jit(new_state, out_shardings=layout)()}
  step = steps_lib.make_train_step(apply, tx, mesh, layout)
  data = jax.device_put({'image': jax.random.normal(jax.random.PRNGKey(2), (batch, 224, 224, 3)),
                         'label': jax.random.randint(jax.random.PRNGKey(3), (batch,), 0, 1000)},
                        sharding.batch_sharding(mesh))

  def run(n):
    for _ in range(n):
      box['state'], m = step(box['state'], data)
    jax.block_until_ready(m['loss'])

  run(2)  # compilation and warm-up
  return batch * steps / timing.median_seconds(lambda: run(steps), repeats)


def torch_model():
  import torch  # noqa: PLC0415

  try:
    import torchvision  # noqa: PLC0415

    return torchvision.models.alexnet(), f'torchvision {torchvision.__version__}'
  except (ImportError, RuntimeError):  # RuntimeError: a torchvision build that does not match this torch
    nn = torch.nn
    return nn.Sequential(  # torchvision.models.alexnet's layers, in its order
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, 1000)), 'torch.nn (torchvision not installed)'


def torch_images_per_s(batch, steps, repeats, compiled):
  import torch  # noqa: PLC0415

  cuda = torch.cuda.is_available()
  device = 'cuda' if cuda else 'cpu'
  torch.manual_seed(0)
  model, source = torch_model()
  model = model.to(device).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (batch,), device=device)
  loss_fn = torch.nn.CrossEntropyLoss()

  def train_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
      loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(train_step) if compiled else train_step

  def run(n):
    for _ in range(n):
      loss = fn()
    loss.item()  # waits for the device

  run(3)  # warm-up (and compilation)
  return batch * steps / timing.median_seconds(lambda: run(steps), repeats), source, torch.__version__


def main():
  gpu = jax.default_backend() != 'cpu'
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=256 if gpu else 8)
  p.add_argument('--steps', type=int, default=20 if gpu else 3)
  p.add_argument('--repeats', type=int, default=5 if gpu else 3)
  p.add_argument('--dtype', choices=alexnet.DTYPES, default='bfloat16' if gpu else 'float32')
  p.add_argument('--networks', default=','.join(NETWORKS), help='comma-separated, from: ' + ', '.join(NETWORKS))
  p.add_argument('--kernels', default='auto', help='speed kernels, as model.kernels: auto, none or names from '
                 'trainnets/kernels/__init__.py (e.g. split_groups,space_to_depth)')
  p.add_argument('--no_torch', action='store_true', help='skip the PyTorch peers')
  args = p.parse_args()
  unknown = set(args.networks.split(',')) - set(NETWORKS)
  if unknown:
    p.error(f'unknown networks {sorted(unknown)}; choose from {", ".join(NETWORKS)}')
  try:
    ops, kernel_names = kernels.resolve(args.kernels, jax.default_backend())
  except kernels.KernelError as e:
    p.error(f'--kernels: {e}')
  device = jax.devices()[0]
  peak = peak_flops(device) if args.dtype == 'bfloat16' else None
  result = {'batch': args.batch, 'dtype': args.dtype, 'steps': args.steps, 'repeats': args.repeats,
            'device': device.device_kind, 'devices': len(jax.devices()), 'jax': jax.__version__,
            'python': platform.python_version(), 'machine': platform.machine(),
            'kernels': list(kernel_names), 'networks': {}}
  for name in args.networks.split(','):
    arch = dataclasses.replace(NETWORKS[name], dtype=args.dtype)
    t0 = time.time()
    ips = jax_images_per_s(arch, args.batch, args.steps, args.repeats, ops)
    flops = 6 * alexnet.multiply_adds(arch)
    mfu = ips * flops / peak if peak else None
    result['networks'][name] = {'images_per_s': round(ips, 1), 'model_gflop_per_image': round(flops / 1e9, 3),
                                'mfu': round(mfu, 4) if mfu else None}
    print(f'{name:12s} {ips:10.1f} images/s' + (f'  MFU {mfu:.1%}' if mfu else '') +
          f'  ({time.time() - t0:.0f} s with compilation)', flush=True)
  if not args.no_torch:
    for compiled in (False, True):
      key = 'torch_compile' if compiled else 'torch_eager'
      try:
        ips, source, version = torch_images_per_s(args.batch, args.steps, args.repeats, compiled)
        result[key] = round(ips, 1)
        result['torch'], result['torch_model'] = version, source
        print(f'{key:12s} {ips:10.1f} images/s  ({source}, PyTorch {version})', flush=True)
      except Exception as e:  # noqa: BLE001 (torch.compile needs a working compiler toolchain; report, go on)
        result[key] = None
        result[f'{key}_error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
        print(f'{key}: failed ({result[f"{key}_error"]})', flush=True)
  nets_ = result['networks']
  best_torch = result.get('torch_compile') or result.get('torch_eager')
  if 'torchvision' in nets_ and best_torch:
    result['torchvision_x_torch_best'] = round(nets_['torchvision']['images_per_s'] / best_torch, 3)
    print(f'torchvision variant: {result["torchvision_x_torch_best"]:.2f}x the faster PyTorch peer')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
