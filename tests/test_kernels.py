"""The speed kernels (trainnets/kernels/): each computes the same function as nets.layers' plain op, in value and
gradient; 'auto' resolves per platform; forward-mode differentiation through a hand-written gradient is one clear
error; and every model is differentiable in every mode with the plain ops."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import alexnet
from nets import cnn
from nets import layers
from trainnets import kernels
from trainnets.kernels import conv as conv_lib
from trainnets.kernels import lrn as lrn_lib
from trainnets.kernels import pool

KEY = jax.random.PRNGKey(0)


def _reduce_window_max(x, k, s=None, padding='VALID'):
  s = s or k
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), padding)


@pytest.mark.parametrize('k,ties', [(2, False), (2, True), (3, True)])
def test_max_pool_fast_path_matches_reduce_window(k, ties):
  """Values and gradients equal reduce_window's, whose gradient goes to each window's first maximum; with ties
  (rounded inputs, as in an image's flat background) a gradient that split or copied them would differ."""
  x = jax.random.normal(KEY, (2, 4 * k, 3 * k, 3))
  if ties:
    x = jnp.round(x)
  probe = jnp.arange(72.0).reshape(2, 4, 3, 3)
  np.testing.assert_array_equal(pool.max_pool(x, k, k), _reduce_window_max(x, k))
  g = jax.grad(lambda x: (pool.max_pool(x, k, k) * probe).sum())(x)
  g_ref = jax.grad(lambda x: (_reduce_window_max(x, k) * probe).sum())(x)
  np.testing.assert_array_equal(g, g_ref)
  assert np.count_nonzero(g) == probe.size - 1  # one pixel per window (probe 0 once)


@pytest.mark.parametrize('k,s,padding,hw', [(3, 2, 'VALID', (13, 11)), (3, 2, 'SAME', (14, 14)),
                                            (3, 2, 'SAME', (15, 9)),
                                            (3, 1, 'VALID', (7, 8)), (2, 3, 'VALID', (8, 8)), (2, 2, 'SAME', (7, 7))])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_strided_path_matches_reduce_window(k, s, padding, hw, ties):
  """Overlapping, gapped and padded windows: values and gradients equal reduce_window's (first maximum of each
  window), ties included; an input pixel that is the maximum of several windows gets the sum of their gradients."""
  x = jax.random.normal(KEY, (2, *hw, 3))
  if ties:
    x = jnp.round(x)
  ref = lambda x: _reduce_window_max(x, k, s, padding)
  y = pool.max_pool(x, k, s, padding)
  np.testing.assert_array_equal(y, ref(x))
  probe = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)  # integers: sums exact in any order
  g = jax.grad(lambda x: (pool.max_pool(x, k, s, padding) * probe).sum())(x)
  np.testing.assert_array_equal(g, jax.grad(lambda x: (ref(x) * probe).sum())(x))


def test_batch_slices_cut_evenly_or_not_at_all():
  """A size of None means the whole batch; a batch the size does not divide into equal slices stays whole."""
  assert conv_lib._slices(128, 16) == 8 and conv_lib._slices(128, None) == 1
  assert conv_lib._slices(6, 16) == 1 and conv_lib._slices(48, 16) == 3


@pytest.mark.parametrize('names', [('sliced_conv',), ('split_groups',), ('space_to_depth',), 'auto'])
@pytest.mark.parametrize('batch,stride,padding,groups', [(128, 1, 'SAME', 1), (48, 2, 1, 1), (64, 1, 'VALID', 2),
                                                         (6, 1, 'SAME', 1)])
def test_conv_kernels_and_their_gradients_equal_xla(batch, stride, padding, groups, names):
  """auto: every conv kernel, oneDNN's where built (tests/test_kernels_onednn.py)."""
  ops = kernels.ops(kernels.names_for('auto', 'cpu') if names == 'auto' else names)
  p = layers.conv_init(KEY, 3, 8, 16, groups=groups)
  x = jax.random.normal(jax.random.PRNGKey(4), (batch, 7, 7, 8))
  pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
  plain = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), pad, feature_group_count=groups,
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = lambda x, w: ops.conv({'W': w, 'b': jnp.zeros(16)}, x, stride=stride, padding=padding, groups=groups)
  np.testing.assert_allclose(ours(x, p['W']), plain(x, p['W']), rtol=1e-5, atol=1e-5)
  probe = jax.random.normal(jax.random.PRNGKey(5), plain(x, p['W']).shape)
  g_ours = jax.grad(lambda x, w: (ours(x, w) * probe).sum(), argnums=(0, 1))(x, p['W'])
  g_plain = jax.grad(lambda x, w: (plain(x, w) * probe).sum(), argnums=(0, 1))(x, p['W'])
  for a, b in zip(g_ours, g_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel,stride,padding,hw,cin', [(11, 4, 2, (35, 37), 3), (5, 2, 'SAME', (13, 11), 2),
                                                        (3, 2, 'VALID', (9, 10), 3), (4, 3, 1, (10, 11), 2)])
def test_space_to_depth_conv_equals_the_strided_conv(kernel, stride, padding, hw, cin):
  """The same outputs and parameter gradients, for kernels the stride divides or not and any padding."""
  p = layers.conv_init(KEY, kernel, cin, 5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, *hw, cin))
  s2d = kernels.ops(('space_to_depth',))
  assert s2d.conv is not layers.conv
  f = lambda p, ops: ops.conv(p, x, stride=stride, padding=padding)
  np.testing.assert_allclose(f(p, s2d), f(p, layers.PLAIN), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, ops=ops: jnp.sum(jnp.sin(f(p, ops))))(p) for ops in (s2d, layers.PLAIN)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)


@pytest.mark.parametrize('n,k,alpha,beta', [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.5, 0.5), (4, 0.5, 0.1, 1.0)])
def test_lrn_kernel_equals_the_plain_formula_in_value_and_gradient(n, k, alpha, beta):
  """The hand-written gradient against JAX's derivative of nets.layers.lrn, float32 and bfloat16 inputs."""
  a = jax.random.normal(KEY, (2, 3, 3, 7)) * 3
  probe = jax.random.normal(jax.random.PRNGKey(1), a.shape)
  for over_n in (True, False):  # g_ref stays the plain form's, for the bfloat16 check below
    kw = dict(n=n, k=k, alpha=alpha, beta=beta, alpha_over_n=over_n)
    np.testing.assert_array_equal(lrn_lib.lrn(a, **kw), layers.lrn(a, **kw))
    g = jax.grad(lambda a, kw=kw: jnp.sum(lrn_lib.lrn(a, **kw) * probe))(a)
    g_ref = jax.grad(lambda a, kw=kw: jnp.sum(layers.lrn(a, **kw) * probe))(a)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
  kw = dict(n=n, k=k, alpha=alpha, beta=beta)
  g16 = jax.grad(lambda a: jnp.sum(lrn_lib.lrn(a, **kw).astype(jnp.float32) * probe))(a.astype(jnp.bfloat16))
  assert g16.dtype == jnp.bfloat16
  np.testing.assert_allclose(g16.astype(jnp.float32), g_ref, rtol=2e-2, atol=2e-2)


def test_auto_resolves_per_platform_and_names_are_checked():
  cpu = kernels.names_for('auto', 'cpu')
  assert set(cpu) >= {'split_groups', 'space_to_depth', 'max_pool_grad', 'lrn_grad'}
  assert len(set(cpu) & {'sliced_conv', 'onednn_conv'}) == 1, 'oneDNN where built, else XLA\'s slices'
  for platform in ('gpu', 'tpu', 'some_new_platform'):  # auto never picks what the platform cannot run
    chosen = kernels.names_for('auto', platform)
    assert chosen and not set(chosen) & set(kernels.CPU_ONLY), (platform, chosen)
    assert kernels.names_for(','.join(chosen), platform) == chosen  # and what it picks can be named
  assert kernels.names_for('none', 'cpu') == () and kernels.ops(()) == layers.PLAIN
  assert kernels.names_for('lrn_grad, sliced_conv', 'cpu') == ('sliced_conv', 'lrn_grad')
  with pytest.raises(kernels.KernelError, match="'fast_conv'.* is not a kernel"):
    kernels.names_for('fast_conv', 'cpu')
  with pytest.raises(kernels.KernelError, match='run on the CPU only'):
    kernels.names_for('sliced_conv', 'gpu')


@pytest.mark.parametrize('names', [('sliced_conv',), ('max_pool_grad',), ('lrn_grad',)])
def test_forward_mode_through_a_hand_written_gradient_is_one_clear_error(names):
  ops = kernels.ops(names)
  arch = cnn.Arch(conv=((4, 3, 1),), dense=(8,), lrn=True)
  params = cnn.init(KEY, arch, (8, 8, 1))
  x = jax.random.normal(KEY, (2, 8, 8, 1))
  f = lambda x: cnn.apply(params, x, arch, ops=ops)
  jax.grad(lambda x: f(x).sum())(x)  # reverse mode works
  with pytest.raises(kernels.KernelError, match=f'{names[0]} has a hand-written reverse-mode gradient only.*'
                     'model.kernels=none'):
    jax.jvp(f, (x,), (x,))


def _hvp_against_finite_differences(loss, params, x):
  """A Hessian-vector product by forward over reverse mode (jax.jvp of jax.grad) of loss(params, x), against
  central differences of the gradient, in float64 so that a step small enough to cross no ReLU or pooling kink
  still leaves many digits."""
  with jax.enable_x64(True):
    params, x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
    keys = iter(jax.random.split(jax.random.PRNGKey(7), len(jax.tree.leaves(params))))
    v = jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape, jnp.float64), params)
    grad = jax.grad(lambda p: loss(p, x))
    _, hvp = jax.jvp(grad, (params,), (v,))
    eps = 1e-6
    plus, minus = (grad(jax.tree.map(lambda p, d, s=s: p + s * eps * d, params, v)) for s in (1, -1))
    flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)])
    h, f = flat(hvp), (flat(plus) - flat(minus)) / (2 * eps)
  assert h.dtype == np.float64 and np.linalg.norm(h) > 0
  assert np.linalg.norm(h - f) < 1e-5 * np.linalg.norm(f), (np.linalg.norm(h - f), np.linalg.norm(f))


@pytest.mark.slow
def test_a_small_cnn_is_differentiable_in_every_mode():
  """jax.grad, jax.jvp, jax.jacfwd and jax.hessian through conv, max pooling, LRN and feature groups: a
  Hessian-vector product of the loss against finite differences."""
  arch = cnn.Arch(conv=((4, 3, 1), (6, 3, 1)), dense=(8,), lrn=True, feature_groups=2, pool='max', pool_window=3,
                  pool_stride=2)
  params = cnn.init(KEY, arch, (9, 9, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 9, 9, 1))
  y = jnp.arange(4) % 10
  loss = lambda p, x: -jnp.mean(jax.nn.log_softmax(cnn.apply(p, x, arch))[jnp.arange(4), y])
  _hvp_against_finite_differences(loss, params, x)
  jac = jax.jacfwd(lambda x: cnn.apply(params, x, arch))(x[:1])
  assert jac.shape == (1, 10, 1, 9, 9, 1)
  h = jax.hessian(lambda x: jnp.sum(cnn.apply(params, x, arch) ** 2))(x[:1])
  assert h.shape == (1, 9, 9, 1) * 2 and bool(jnp.all(jnp.isfinite(h)))


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['paper', 'torchvision'])
def test_a_narrow_alexnet_is_differentiable_in_every_mode(variant):
  """The 2012 network's layers (grouped convolutions, LRN, overlapping max pooling) or torchvision's, at a narrow
  width and a small resolution: a Hessian-vector product of the loss against finite differences."""
  kw = dict(widths=(8, 8, 12, 12, 8), dense=(16, 16), num_classes=5, bias_one=0.1, init_std=0.1, dtype='float64')
  arch = alexnet.Arch.torchvision(**kw) if variant == 'torchvision' else alexnet.Arch(**kw)
  params = alexnet.init(KEY, dataclasses.replace(arch, dtype='float32'), (67, 67, 3))  # float64 in the check
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 67, 67, 3))
  loss = lambda p, x: -jnp.mean(jax.nn.log_softmax(alexnet.apply(p, x, arch))[:, 0])
  _hvp_against_finite_differences(loss, params, x)


@pytest.mark.parametrize('model', ['cnn', pytest.param('alexnet', marks=pytest.mark.slow)])
def test_models_with_every_kernel_equal_the_plain_models(model):
  """The kernels change how, not what: the same loss and gradients as the plain ops, through whole models."""
  if model == 'cnn':
    arch = cnn.Arch(conv=((4, 3, 1), (6, 3, 2)), dense=(8,), lrn=True)
    module, shape = cnn, (12, 12, 1)
  else:
    arch = alexnet.Arch(widths=(8, 8, 12, 12, 8), dense=(16, 16), num_classes=5, bias_one=0.1, init_std=0.1)
    module, shape = alexnet, (67, 67, 3)
  params = module.init(KEY, arch, shape)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, *shape))
  fast = kernels.ops(kernels.names_for('auto', 'cpu'))
  loss = lambda p, ops: jnp.sum(jnp.sin(module.apply(p, x, arch, ops=ops)))
  np.testing.assert_allclose(loss(params, fast), loss(params, layers.PLAIN), rtol=1e-5)
  g_fast, g_plain = (jax.grad(loss)(params, ops) for ops in (fast, layers.PLAIN))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), g_fast, g_plain)
