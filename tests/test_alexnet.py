"""AlexNet: the paper's parameter and neuron counts, the two towers, initialisation, variants, bf16."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
from nets import alexnet
from nets import layers
from trainnets import kernels
from trainnets.errors import ConfigError

PAPER = alexnet.Arch()


def abstract_params(arch):
  return jax.eval_shape(lambda: alexnet.init(jax.random.PRNGKey(0), arch))


@pytest.mark.parametrize('arch, count', [
    (PAPER, 60_965_224),  # the grouped 2012 network
    (alexnet.Arch(groups=(1,) * 5), 62_378_344),  # the same widths in one tower
    (alexnet.Arch.torchvision(), 61_100_840),  # torchvision.models.alexnet
])
def test_parameter_counts(arch, count):
  assert nets.num_params(abstract_params(arch)) == count


def test_neurons_per_layer_match_the_paper():
  """Section 3.5: 253,440-186,624-64,896-64,896-43,264-4096-4096-1000. conv1's 55x55x96 maps hold 290,400
  neurons; the paper's 253,440 does not fit its own 55x55 maps (a known slip), every other layer matches."""
  neurons = {k: math.prod(v) for k, v in alexnet.layer_shapes(PAPER).items()}
  assert neurons == {'conv1': 290_400, 'conv2': 186_624, 'conv3': 64_896, 'conv4': 64_896, 'conv5': 43_264,
                     'fc6': 4096, 'fc7': 4096, 'fc8': 1000}
  assert 650_000 < sum(neurons.values()) < 660_000  # "650,000 neurons"


def test_multiply_adds_per_image():
  assert alexnet.multiply_adds(PAPER) == 724_406_816  # 0.72 G
  assert alexnet.multiply_adds(alexnet.Arch.torchvision()) == 714_188_480  # 0.71 G


def _conv(params, x, i, ops=layers.PLAIN):
  _, stride, pad = alexnet.KERNELS[i]
  return ops.conv(params, x, stride=stride, padding=pad, groups=PAPER.groups[i])


def test_grouped_layers_are_two_towers():
  """conv2's first 128 maps see only conv1's first 48 maps; conv3 sees both towers."""
  params = alexnet.init(jax.random.PRNGKey(0), PAPER)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 9, 9, 96))
  x2 = x.at[..., 48:].add(1.0)  # change only tower 2's inputs
  y, y2 = (_conv(params['conv2'], v, 1) for v in (x, x2))
  np.testing.assert_array_equal(y[..., :128], y2[..., :128])
  assert not np.allclose(y[..., 128:], y2[..., 128:])
  z = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 5, 256))
  w, w2 = (_conv(params['conv3'], v, 2) for v in (z, z.at[..., 200:].add(1.0)))
  assert not np.allclose(w[..., :192], w2[..., :192])


def test_split_groups_equal_xla_feature_groups():
  params = alexnet.init(jax.random.PRNGKey(0), PAPER)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 13, 13, 384))
  split = kernels.ops(('split_groups',))
  np.testing.assert_allclose(_conv(params['conv4'], x, 3), _conv(params['conv4'], x, 3, split), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.slow
def test_space_to_depth_conv1_is_the_same_network():
  """conv1 over 4x4 pixel blocks: the same logits and gradients as the direct conv1."""
  arch = alexnet.Arch(dense=(16, 16), bias_one=0.1)
  s2d = kernels.ops(('space_to_depth',))
  params = alexnet.init(jax.random.PRNGKey(0), arch, (67, 67, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 67, 67, 3))
  loss = lambda ops: lambda p: jnp.sum(alexnet.apply(p, x, arch, ops=ops) ** 2)
  np.testing.assert_allclose(alexnet.apply(params, x, arch, ops=s2d), alexnet.apply(params, x, arch), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(jax.grad(loss(s2d))(params)['conv1']['W'],
                             jax.grad(loss(layers.PLAIN))(params)['conv1']['W'],
                             rtol=1e-3, atol=1e-6)


def test_initialisation():
  params = alexnet.init(jax.random.PRNGKey(0), PAPER)
  for name in ('conv1', 'conv3', 'fc8'):
    assert float(jnp.abs(params[name]['b']).max()) == 0.0
  for name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7'):
    np.testing.assert_array_equal(params[name]['b'], 1.0)
  assert float(jnp.std(params['fc6']['W'])) == pytest.approx(0.01, rel=0.01)
  tenth = alexnet.init(jax.random.PRNGKey(0), alexnet.Arch(bias_one=0.1))
  np.testing.assert_allclose(tenth['conv2']['b'], 0.1)


def test_forward_float32_and_bfloat16():
  arch = alexnet.Arch(bias_one=0.1)
  params = alexnet.init(jax.random.PRNGKey(0), arch)
  x = 50.0 * jax.random.normal(jax.random.PRNGKey(1), (2, 224, 224, 3))
  f32 = jax.jit(lambda p, x: alexnet.apply(p, x, arch))(params, x)
  bf16_arch = alexnet.Arch(bias_one=0.1, dtype='bfloat16')
  bf16 = jax.jit(lambda p, x: alexnet.apply(p, x, bf16_arch))(params, x)
  assert f32.shape == (2, 1000) and f32.dtype == bf16.dtype == jnp.float32
  assert np.all(np.isfinite(f32))
  np.testing.assert_allclose(bf16, f32, atol=0.05 * float(jnp.abs(f32).max()) + 1e-3)
  train = alexnet.apply(params, x, arch, train=True, key=jax.random.PRNGKey(2))
  assert not np.allclose(train, f32), 'dropout is active in training'


def test_config_variants_and_validation():
  import ml_collections  # noqa: PLC0415

  from experiments import alexnet_imagenet  # noqa: PLC0415

  tv = alexnet.Arch.from_config(alexnet_imagenet.get_config('torchvision').model)
  assert tv.widths == (64, 192, 384, 256, 256) and not tv.lrn and tv.dropout_before_dense
  assert tv.dropout_scaling == 'inverted', 'torchvision: nn.Dropout scales in training'
  paper = alexnet_imagenet.get_config()
  assert alexnet.Arch.from_config(paper.model).dropout_scaling == 'test_time', 'the paper: outputs x 0.5 at test'
  assert paper.train.momentum_form == 'velocity' and paper.data.crop_positions == 32
  assert alexnet.Arch.from_config(alexnet_imagenet.get_config('single').model).groups == (1,) * 5
  assert alexnet.Arch.from_config(alexnet_imagenet.get_config('bf16').model).dtype == 'bfloat16'
  with pytest.raises(ValueError, match='at most one of paper, single, torchvision and any of bf16, quick'):
    alexnet_imagenet.get_config('torchvision,single')
  with pytest.raises(ValueError, match='variant'):
    alexnet.Arch.from_config(ml_collections.ConfigDict({'variant': 'vgg'}))
  with pytest.raises(ConfigError, match='model.groups'):
    alexnet.Arch(groups=(1, 3, 1, 2, 2)).validate()
  with pytest.raises(ConfigError, match='model.dtype'):
    alexnet.Arch(dtype='float16').validate()


@pytest.mark.parametrize('width', [96, 256])  # conv1's and conv2's maps
def test_each_tower_normalises_its_own_maps(width):
  """As on the paper's two GPUs: tower 1's normalised maps do not depend on tower 2's, and the other way round;
  lrn_within_towers=False lets the window cross (maps half-2..half+1 see the other tower)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, width)) * 3
  probe = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  half = width // 2
  for ops in (layers.PLAIN, kernels.ops(('lrn_grad',))):
    within = jax.grad(lambda x, ops=ops: jnp.sum(alexnet.normalise(x, alexnet.Arch(), ops)[..., :half]
                                                   * probe[..., :half]))(x)
    assert float(jnp.abs(within[..., half:]).max()) == 0.0 and float(jnp.abs(within[..., :half]).max()) > 0
  crossing = alexnet.Arch(lrn_within_towers=False)
  g = jax.grad(lambda x: jnp.sum(alexnet.normalise(x, crossing)[..., :half] * probe[..., :half]))(x)
  assert float(jnp.abs(g[..., half:half + 2]).max()) > 0 and float(jnp.abs(g[..., half + 2:]).max()) == 0.0
  # within a tower the maps are normalised exactly as a network of that tower alone would
  np.testing.assert_array_equal(alexnet.normalise(x, alexnet.Arch())[..., half:],
                                alexnet.normalise(x[..., half:], alexnet.Arch(groups=(1,) * 5)))
  assert alexnet.towers(alexnet.Arch(groups=(1,) * 5)) == 1 and alexnet.towers(alexnet.Arch()) == 2
