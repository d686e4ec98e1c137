"""Speed kernels: faster formulations of nets.layers' conv, max_pool and lrn, each the same function in value and
gradient (tests/test_kernels.py), chosen by the config key `model.kernels` and handed to a model as its `ops`:

  sliced_conv     CPU: convolutions on interleaved slices of the batch (trainnets/kernels/conv.py)
  onednn_conv     CPU: the same slices convolved by oneDNN through XLA's FFI, where `make onednn` built it
  split_groups    a grouped convolution as one convolution per group
  space_to_depth  a strided convolution as a stride-1 one over pixel blocks (AlexNet's conv1)
  max_pool_grad   max pooling's gradient in one elementwise pass (trainnets/kernels/pool.py)
  lrn_grad        response normalisation's gradient written by hand (trainnets/kernels/lrn.py)

`model.kernels` is 'none' (nets.layers' plain functions), 'auto' (what was measured faster on the platform at
hand, AUTO below) or a comma-separated list of names. The hand-written gradients serve jax.grad; forward-mode
differentiation (jax.jvp, jax.jacfwd, jax.hessian) through them stops with a KernelError saying to choose 'none'.
"""
import functools

from nets import layers
from trainnets.kernels import conv as conv_lib

NAMES = ('sliced_conv', 'onednn_conv', 'split_groups', 'space_to_depth', 'max_pool_grad', 'lrn_grad')
CPU_ONLY = ('sliced_conv', 'onednn_conv')
# What 'auto' runs, per JAX platform. CPU: every kernel, oneDNN's convolutions where built, else XLA's sliced
# (docs/fashion_mnist/cnn_cpu_performance.md). GPU: measured on one H200 (docs/alexnet/gpu_throughput.md). TPU:
# not measured; the GPU's choice.
AUTO = {
    'cpu': ('onednn_conv', 'split_groups', 'space_to_depth', 'max_pool_grad', 'lrn_grad'),
    'gpu': ('split_groups', 'space_to_depth', 'max_pool_grad', 'lrn_grad'),
    'tpu': ('split_groups', 'space_to_depth', 'max_pool_grad', 'lrn_grad'),
}


class KernelError(TypeError):
  """A kernel cannot do what was asked: forward-mode differentiation, or a kernel this machine lacks."""


def names_for(setting, platform):
  """The kernels `setting` ('auto', 'none' or 'name,name,...') runs on `platform` ('cpu', 'gpu', 'tpu'), in
  NAMES' order; KernelError (a TypeError) for an unknown name, a CPU kernel elsewhere, or oneDNN not built."""
  from trainnets.kernels import onednn  # noqa: PLC0415 (loads the library on first use)

  if setting == 'none':
    return ()
  if setting == 'auto':
    chosen = set(AUTO.get(platform, AUTO['gpu']))
    if 'onednn_conv' in chosen and onednn.load_error():
      chosen = (chosen - {'onednn_conv'}) | {'sliced_conv'}
  else:
    chosen = {n.strip() for n in setting.split(',') if n.strip()}
    unknown = sorted(chosen - set(NAMES))
    if unknown or not chosen:
      raise KernelError(f'model.kernels={setting!r}: {", ".join(unknown) or "no name"} is not a kernel; pass auto, '
                        f'none or names from {", ".join(NAMES)}')
    if platform != 'cpu' and chosen & set(CPU_ONLY):
      raise KernelError(f'model.kernels={setting!r}: {", ".join(sorted(chosen & set(CPU_ONLY)))} run on the CPU '
                        f'only, and JAX computes on {platform}; pass auto or leave them out')
    if 'onednn_conv' in chosen and onednn.load_error():
      raise KernelError(f'model.kernels names onednn_conv, but {onednn.load_error()}; or leave it out')
  return tuple(n for n in NAMES if n in chosen)


def ops(names):
  """nets.layers.Ops computing with the kernels `names` (the others plain)."""
  from trainnets.kernels import lrn as lrn_lib  # noqa: PLC0415
  from trainnets.kernels import pool  # noqa: PLC0415

  plain = layers.PLAIN
  conv_names = set(names) & set(conv_lib.NAMES)
  conv = conv_lib.make_conv(conv_names) if conv_names else plain.conv
  sliced = sorted(conv_names & set(CPU_ONLY))  # the convolutions with hand-written gradients
  return layers.Ops(
      conv=_reverse_only(conv, ' and '.join(sliced)) if sliced else conv,
      max_pool=_reverse_only(pool.max_pool, 'max_pool_grad') if 'max_pool_grad' in names else plain.max_pool,
      lrn=_reverse_only(lrn_lib.lrn, 'lrn_grad') if 'lrn_grad' in names else plain.lrn)


def resolve(setting, platform):
  """(Ops, names) for a config's model.kernels on `platform`: what a trainer hands its model."""
  names = names_for(setting, platform)
  return ops(names), names


def recording(ops_, calls):
  """`ops_` that also append (op name, keyword arguments) to `calls` at every call: a model traced with them (say
  under jax.eval_shape) shows which ops it uses, and how."""
  def record(name, fn):
    return lambda *args, **kw: (calls.append((name, kw)), fn(*args, **kw))[1]

  return layers.Ops(**{name: record(name, getattr(ops_, name)) for name in ('conv', 'max_pool', 'lrn')})


def applied(names, calls):
  """The kernels of `names` that change at least one of a model's `calls` (recording's): the convolution
  kernels its convolutions (split_groups grouped ones, space_to_depth strided ones without groups),
  max_pool_grad its max pooling, lrn_grad its response normalisation. What results.json lists as the kernels
  that computed a run."""
  def changes(name, op, kw):
    if name in ('sliced_conv', 'onednn_conv'):
      return op == 'conv'
    if name == 'split_groups':
      return op == 'conv' and kw.get('groups', 1) > 1
    if name == 'space_to_depth':
      return op == 'conv' and kw.get('stride', 1) > 1 and kw.get('groups', 1) == 1
    return op == {'max_pool_grad': 'max_pool', 'lrn_grad': 'lrn'}[name]

  return tuple(n for n in names if any(changes(n, op, kw) for op, kw in calls))


def _reverse_only(fn, name):
  """`fn`, whose forward-mode differentiation fails with one KernelError line instead of JAX's note on custom
  VJPs."""

  @functools.wraps(fn)
  def wrapped(*args, **kw):
    try:
      return fn(*args, **kw)
    except TypeError as e:
      if 'custom_vjp' not in str(e) or isinstance(e, KernelError):
        raise
      raise KernelError(f'the kernel {name} has a hand-written reverse-mode gradient only; for jax.jvp, '
                        'jax.jacfwd or jax.hessian build the model with model.kernels=none') from None

  return wrapped
