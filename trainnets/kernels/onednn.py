"""oneDNN's convolutions for JAX on the CPU, through XLA's FFI (the C++ side: trainnets/kernels/onednn_conv.cc).

On the CPU, XLA (jax 0.10-0.12) computes convolutions with YNNPACK, whose gradients run slower per core than
oneDNN's, the library PyTorch uses (docs/fashion_mnist/cnn_cpu_performance.md has the timings). `make onednn` builds
`trainnets/kernels/onednn_conv.so` where oneDNN's headers are installed (Debian and Ubuntu: libdnnl-dev); the kernel
`onednn_conv` (trainnets/kernels/conv.py) then computes float32 convolutions without feature groups with it.

The three operations are plain functions of arrays (no state): `forward(x, w, g)`, `input_grad(dy, w, g)` and
`weight_grad(x, dy, g)`, images NHWC and kernels HWIO, `g = geometry(...)` static. Each runs on one thread
(trainnets/kernels/conv.py cuts the batch into slices that XLA runs side by side). XLA may split them along the batch
over devices (custom_partitioning): the weight gradient is then summed over the devices, as a data-parallel step
needs. Under jax.vmap, a mapped axis on the images alone joins the batch; any other is a loop (custom_vmap).
"""
import ctypes
import functools
import os

import jax
from jax.experimental.custom_partitioning import custom_partitioning
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'onednn_conv.so')
_TARGETS = {'onednn_conv_forward': 'OnednnConvForward', 'onednn_conv_input_grad': 'OnednnConvInputGrad',
            'onednn_conv_weight_grad': 'OnednnConvWeightGrad'}
THREADS = 1  # OpenMP threads per call


@functools.cache
def load_error():
  """None when the library is built and loads (its FFI targets are then registered with JAX), else why not."""
  if not os.path.exists(LIBRARY):
    return f'{os.path.relpath(LIBRARY)} is not built: run `make onednn` (it needs oneDNN\'s headers, libdnnl-dev)'
  try:
    lib = ctypes.cdll.LoadLibrary(LIBRARY)
  except OSError as e:
    return f'{os.path.relpath(LIBRARY)} does not load ({e}): rebuild it with `make onednn`'
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return None


def supports(x, w, groups):
  """Whether these operations compute this convolution: float32, no feature groups."""
  return groups == 1 and x.dtype == jnp.float32 and w.dtype == jnp.float32


def pads(image_hw, kernel_hw, stride, padding):
  """((top, bottom), (left, right)) for 'SAME', 'VALID' or explicit pairs."""
  if isinstance(padding, str):
    return tuple(jax.lax.padtype_to_pads(image_hw, kernel_hw, (stride, stride), padding))
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def _ffi(target, shape, a, b, geometry):
  reason = load_error()  # registers the targets the first time
  if reason:
    raise ValueError(reason)
  stride, ((pt, pb), (pl, pr)) = geometry[0], geometry[1]
  attrs = dict(stride_h=stride, stride_w=stride, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr,
               threads=THREADS)
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32))(
      a, b, **{k: np.int64(v) for k, v in attrs.items()})


def _out_hw(geometry):
  stride, ((pt, pb), (pl, pr)), (kh, kw), (h, w) = geometry
  return (h + pt + pb - kh) // stride + 1, (w + pl + pr - kw) // stride + 1


# Each operation: (its FFI target, its result's shape from its operands' shapes and the geometry, its Shardy rule).
# The geometry: (stride, pads, kernel (kh, kw), image (h, w)), static.
_OPS = {
    'forward': ('onednn_conv_forward', lambda x, w, g: (x[0], *_out_hw(g), w[3]), 'b h w c, i j c o -> b p q o'),
    'input_grad': ('onednn_conv_input_grad', lambda dy, w, g: (dy[0], *g[3], w[2]), 'b p q o, i j c o -> b h w c'),
    'weight_grad': ('onednn_conv_weight_grad', lambda x, dy, g: (*g[2], x[3], dy[3]), 'b h w c, b p q o -> i j c o'),
}


def _batch_axes(sharding):
  spec = getattr(sharding, 'spec', None)
  return spec[0] if spec else None


def _partitioned(name):
  target, shape_of, rule = _OPS[name]
  reduces_batch = name == 'weight_grad'

  @functools.partial(custom_partitioning, static_argnums=(2,))
  def op(a, b, geometry):
    return _ffi(target, shape_of(a.shape, b.shape, geometry), a, b, geometry)

  def shardings(mesh, arg_shapes):
    """Operands split along the batch as the first one is, nothing else split; the result likewise, or whole
    (summed over the batch's devices) for the weight gradient."""
    batch = _batch_axes(arg_shapes[0].sharding)
    batch_split = NamedSharding(mesh, P(batch))
    operands = (batch_split, batch_split if reduces_batch else NamedSharding(mesh, P()))
    return batch, operands, NamedSharding(mesh, P()) if reduces_batch else batch_split

  def infer(geometry, mesh, arg_shapes, result_shape):
    return shardings(mesh, arg_shapes)[2]

  def partition(geometry, mesh, arg_shapes, result_shape):
    batch, operands, result = shardings(mesh, arg_shapes)

    def local(a, b):
      out = _ffi(target, shape_of(a.shape, b.shape, geometry), a, b, geometry)
      return jax.lax.psum(out, batch) if reduces_batch and batch else out

    return mesh, local, result, operands

  factors = rule.replace(',', ' ').replace('->', ' ').split()
  others = tuple(f for i, f in enumerate(factors) if f != 'b' and f not in factors[:i])  # in the rule's order
  op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                   need_replication_factors=others, reduction_factors=('b',) if reduces_batch else ())
  return op


_PARTITIONED = {name: _partitioned(name) for name in _OPS}


@functools.cache
def _batchable(name, geometry):
  """The operation for one geometry, under jax.vmap too (custom_partitioning has no batching rule): a mapped
  axis on the images alone (the forward pass, the input gradient) joins their batch; any other is a loop."""
  op = _PARTITIONED[name]

  @jax.custom_batching.custom_vmap
  def batchable(a, b):
    return op(a, b, geometry)

  @batchable.def_vmap
  def rule(axis_size, in_batched, a, b):
    a_mapped, b_mapped = in_batched
    if a_mapped and not b_mapped and name != 'weight_grad':
      out = batchable(a.reshape(-1, *a.shape[2:]), b)
      return out.reshape(axis_size, -1, *out.shape[1:]), True
    if not a_mapped:
      return jax.lax.map(lambda b: batchable(a, b), b), True
    if not b_mapped:
      return jax.lax.map(lambda a: batchable(a, b), a), True
    return jax.lax.map(lambda ab: batchable(*ab), (a, b)), True

  return batchable


def forward(x, w, geometry):
  return _batchable('forward', geometry)(x, w)


def input_grad(dy, w, geometry):
  return _batchable('input_grad', geometry)(dy, w)


def weight_grad(x, dy, geometry):
  return _batchable('weight_grad', geometry)(x, dy)


def geometry(x_shape, w_shape, stride, padding):
  kernel_hw, image_hw = tuple(w_shape[:2]), tuple(x_shape[1:3])
  return (stride, pads(image_hw, kernel_hw, stride, padding), kernel_hw, image_hw)
