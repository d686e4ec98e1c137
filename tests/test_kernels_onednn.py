"""oneDNN's convolutions through XLA's FFI (trainnets/kernels/onednn.py, trainnets/kernels/onednn_conv.cc): the same
values and gradients as XLA's plain convolution, split along the batch over devices without gathering it, and chosen by
model.kernels.

Skipped where trainnets/kernels/onednn_conv.so is not built (`make onednn`), unless pytest's --require-onednn demands
it, as .ci/run does.
"""
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from nets import layers
from trainnets import kernels
from trainnets.kernels import conv as conv_lib
from trainnets.kernels import onednn

KEY = jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def built(request):
  if onednn.load_error() and not request.config.getoption('--require-onednn'):
    pytest.skip(f'oneDNN convolutions not built: {onednn.load_error()}')


def assert_close(a, b, tol):
  """Equal up to float32 rounding: differences within tol of b's largest magnitude (sums of many products,
  accumulated in another order, differ most where they cancel)."""
  np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(jnp.max(jnp.abs(b))))


def plain(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('batch,hw,cin,cout,kernel,stride,padding', [
    (128, (14, 14), 32, 64, 5, 1, 'SAME'),           # the Fashion-MNIST CNN's conv2, sliced as in training
    (16, (28, 28), 1, 32, 5, 1, 'SAME'),             # conv1: one input channel
    (6, (13, 11), 5, 7, 3, 2, 'VALID'),              # strided, odd sizes, a batch that is not sliced
    (4, (11, 12), 3, 6, 4, 3, ((1, 2), (0, 3))),     # even kernel, uneven explicit padding
])
def test_onednn_convolution_and_its_gradients_equal_xla(batch, hw, cin, cout, kernel, stride, padding):
  x = jax.random.normal(KEY, (batch, *hw, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, cin, cout)) / np.sqrt(kernel * kernel * cin)
  ours = lambda x, w: conv_lib._sliced_conv(x, w, stride, padding, 1, 'onednn')
  y = jax.jit(ours)(x, w)
  assert_close(y, plain(x, w, stride, padding), 1e-5)
  probe = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  grads = [jax.jit(jax.grad(lambda x, w, f=f: (f(x, w) * probe).sum(), argnums=(0, 1)))(x, w)
           for f in (ours, lambda x, w: plain(x, w, stride, padding))]
  for a, b in zip(*grads):  # measured: within 4e-6 of the largest gradient, XLA's and oneDNN's alike
    assert_close(a, b, 1e-5)


def test_the_batch_is_split_over_devices_not_gathered():
  """On 8 devices with the batch split, each device convolves its own images (no all-gather) and the weight
  gradient is summed over the devices: the same values as on one device."""
  x = jax.random.normal(KEY, (32, 14, 14, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 8, 16)) / 15
  g = onednn.geometry(x.shape, w.shape, 1, 'SAME')

  def ops(x, w):
    y = onednn.forward(x, w, g)
    return y, onednn.input_grad(jnp.cos(y), w, g), onednn.weight_grad(x, jnp.cos(y), g)

  one = jax.jit(ops)(x, w)
  mesh = Mesh(np.asarray(jax.devices()[:8]), ('data',))
  xs, ws = jax.device_put(x, NamedSharding(mesh, P('data'))), jax.device_put(w, NamedSharding(mesh, P()))
  f = jax.jit(ops)
  split = f(xs, ws)
  hlo = f.lower(xs, ws).compile().as_text()
  assert 'all-gather' not in hlo and hlo.count('all-reduce(') == 1, 'only the weight gradient is summed'
  assert 'f32[4,14,14,16]{3,2,1,0} custom-call' in hlo, 'the forward pass sees 32 / 8 images per device'
  assert [o.sharding.spec for o in split] == [P('data'), P('data'), P()]
  for a, b in zip(split, one):
    assert_close(a, b, 1e-5)


def test_onednn_conv_computes_float32_ungrouped_convolutions():
  p = layers.conv_init(KEY, 3, 4, 8)
  x = jnp.ones((2, 6, 6, 4))
  text = lambda ops, p=p, x=x, groups=1: str(jax.make_jaxpr(lambda p: ops.conv(p, x, groups=groups))(p))
  with_onednn = kernels.ops(('onednn_conv',))
  assert 'custom_partitioning' in text(with_onednn) and 'conv_general_dilated' not in text(with_onednn)
  assert 'conv_general_dilated' in text(kernels.ops(('sliced_conv',))) and 'custom' not in text(layers.PLAIN)
  grouped = layers.conv_init(KEY, 3, 4, 8, groups=2)  # feature groups and other dtypes stay XLA's
  assert 'conv_general_dilated' in text(with_onednn, grouped, groups=2)
  assert 'conv_general_dilated' in text(with_onednn, x=x.astype(jnp.bfloat16))
  assert kernels.names_for('auto', 'cpu')[0] == 'onednn_conv', 'auto chooses it where built'


def test_a_missing_build_is_one_clear_error(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, 'LIBRARY', str(tmp_path / 'missing.so'))
  onednn.load_error.cache_clear()
  try:
    assert kernels.names_for('auto', 'cpu')[0] == 'sliced_conv', 'auto falls back to XLA\'s sliced convolutions'
    with pytest.raises(kernels.KernelError, match='names onednn_conv, but .*make onednn'):
      kernels.names_for('onednn_conv', 'cpu')
  finally:
    monkeypatch.undo()
    onednn.load_error.cache_clear()
    assert onednn.load_error() is None


@pytest.mark.parametrize('mapped', [(0, None), (None, 0), (0, 0)])
def test_the_operations_under_vmap(mapped):
  """jax.vmap over images alone (ten crops, say) folds them into the batch; over the kernel too (an ensemble)
  it loops: the same values as XLA's convolution under vmap, every operation."""
  x = jax.random.normal(KEY, (3, 4, 9, 9, 2))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2, 5)) / 4
  x, w = (a if m == 0 else a[0] for a, m in zip((x, w), mapped))
  g = onednn.geometry((4, 9, 9, 2), (3, 3, 2, 5), 1, 'SAME')
  dy = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 9, 9, 5))
  ours = jax.vmap(lambda x, w, dy: (onednn.forward(x, w, g), onednn.input_grad(dy, w, g),
                                    onednn.weight_grad(x, dy, g)), in_axes=(*mapped, 0))
  ref = jax.vmap(lambda x, w, dy: (plain(x, w, 1, 'SAME'),
                                   *jax.vjp(lambda x, w: plain(x, w, 1, 'SAME'), x, w)[1](dy)), in_axes=(*mapped, 0))
  for a, b in zip(jax.jit(ours)(x, w, dy), ref(x, w, dy)):
    assert_close(a, b, 1e-5)
