"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012) and torchvision's variant, as pure functions.

The 2012 network on 224x224x3 images (conv1 is padded by 2 pixels, so its 11x11 stride-4 windows give the paper's
55x55 maps; the paper's 224 and 55 are otherwise inconsistent):

  conv1  96 11x11 stride 4 -> ReLU -> LRN -> max pool 3/2        55x55x96 -> 27x27
  conv2 256  5x5 pad 2, 2 groups -> ReLU -> LRN -> max pool 3/2  27x27x256 -> 13x13
  conv3 384  3x3 pad 1 (sees both groups)                        13x13x384
  conv4 384  3x3 pad 1, 2 groups                                 13x13x384
  conv5 256  3x3 pad 1, 2 groups -> max pool 3/2                 13x13x256 -> 6x6
  fc6 4096 -> ReLU -> dropout 0.5, fc7 4096 -> ReLU -> dropout 0.5, fc8 1000 (logits)

The two groups are the paper's two GPUs: a grouped layer sees only the feature maps of its own tower. With
`groups=1` the same widths form one tower. Contrast normalisation is the paper's formula (nets/layers.lrn):
b = a / (k + alpha * sum over n neighbouring maps of a^2)^beta with k=2, n=5, alpha=1e-4, beta=0.75;
`lrn_alpha_over_n=True` divides alpha by n as Caffe and PyTorch do, which normalises 5 times more weakly. In the
grouped network each tower normalises its own maps, as each GPU did (`lrn_within_towers`; conv1's 96 maps are 48
per GPU too): the window stops at the tower boundary. `lrn_within_towers=False` lets it cross, as a one-device
reimplementation does by default.
Initialisation: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6 and fc7 (`bias_one`; reproductions
report that 1 can stall training, 0.1 is a common choice) and 0 elsewhere.

torchvision's variant (`Arch.torchvision()`): widths 64-192-384-256-256, no groups, no normalisation, dropout
before fc6 and fc7, PyTorch's default (uniform fan-in) initialisation replaced by the same N(0, 0.01) here.

How it is computed is apart from what: `apply(..., ops=...)` takes faster formulations of the same functions from
trainnets/kernels/ (grouped layers as one convolution per group, conv1 over 4x4 pixel blocks, the pooling and
normalisation gradients), as the config's model.kernels chooses.

`dtype='bfloat16'` computes in bfloat16 (mixed precision); parameters stay float32 and logits come back float32.
Parameters: {'conv1': {'W', 'b'}, ..., 'conv5', 'fc6', 'fc7', 'fc8'}.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp

import nets
from nets import layers
from trainnets.errors import require

IMAGE_SIZE = 224
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class Arch:
  widths: tuple = (96, 256, 384, 384, 256)
  groups: tuple = (1, 2, 1, 2, 2)  # per conv layer; all 1: single tower
  lrn: bool = True  # after conv1 and conv2
  lrn_n: int = 5
  lrn_k: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  lrn_alpha_over_n: bool = False  # Caffe's and PyTorch's alpha / n
  lrn_within_towers: bool = True  # with groups: the window stays within each tower's maps, as on two GPUs
  dense: tuple = (4096, 4096)
  dropout: float = 0.5
  dropout_scaling: str = 'test_time'  # the paper's; 'inverted': scaled in training (nets/layers.dropout)
  dropout_before_dense: bool = False  # torchvision: dropout on the inputs of fc6 and fc7, not on their outputs
  num_classes: int = 1000
  init_std: float = 0.01
  bias_one: float = 1.0  # the bias of conv2, conv4, conv5, fc6, fc7
  dtype: str = 'float32'

  @classmethod
  def torchvision(cls, **kw):
    return cls(**{'widths': (64, 192, 384, 256, 256), 'groups': (1,) * 5, 'lrn': False,
                  'dropout_scaling': 'inverted', 'dropout_before_dense': True, **kw})

  @classmethod
  def from_config(cls, model_cfg):
    """An Arch from a config's `model` section: `variant` ('paper' or 'torchvision') plus any field to override."""
    kw = nets.arch_fields(cls, model_cfg)
    variant = model_cfg.variant
    if variant == 'torchvision':
      return cls.torchvision(**kw)
    if variant != 'paper':
      raise ValueError(f'model.variant {variant!r} is unknown; choose paper or torchvision')
    return cls(**kw)

  def validate(self):
    """A ConfigError naming the first bad field's key and what is allowed."""
    require(len(self.widths) == 5 and len(self.groups) == 5,
            f'model.widths {self.widths} and model.groups {self.groups} need 5 entries (conv1..conv5)')
    require(not any(w % g for w, g in zip(self.widths, self.groups)) and not any(
        i and self.widths[i - 1] % g for i, g in enumerate(self.groups)),
            f'model.groups {self.groups} must divide each conv layer\'s input and output widths')
    require(not (self.lrn and self.lrn_within_towers) or all(
        w % max(self.groups) == 0 for w, normalised in zip(self.widths, NORMALISED) if normalised),
            f'model.lrn_within_towers: the normalised layers\' widths {self.widths[:2]} must split into '
            f'{max(self.groups)} towers; pass --config.model.lrn_within_towers=False or other widths')
    require(self.dtype in DTYPES, f'model.dtype {self.dtype!r} is unknown; choose one of {DTYPES}')
    require(0 <= self.dropout < 1, f'model.dropout must be in [0, 1), got {self.dropout}')
    require(self.dropout_scaling in layers.DROPOUT_SCALINGS, f'model.dropout_scaling {self.dropout_scaling!r} is '
            f'unknown; choose one of {", ".join(layers.DROPOUT_SCALINGS)}')


# (kernel, stride, padding) of conv1..conv5, and which are followed by normalisation and pooling
KERNELS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
NORMALISED = (True, True, False, False, False)
POOLED = (True, True, False, False, True)
BIAS_ONE = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')


def init(key, arch, input_shape_HxWxC=(IMAGE_SIZE, IMAGE_SIZE, 3)):
  keys = iter(jax.random.split(key, 8))
  params, channels = {}, input_shape_HxWxC[-1]
  bias = lambda name: arch.bias_one if name in BIAS_ONE else 0.0
  for i, (width, groups, (kernel, _, _)) in enumerate(zip(arch.widths, arch.groups, KERNELS)):
    name = f'conv{i + 1}'
    params[name] = layers.conv_init(next(keys), kernel, channels, width, groups=groups, weight_init='normal',
                                    std=arch.init_std, bias=bias(name))
    channels = width
  flat = jax.eval_shape(lambda p: _features(p, jnp.zeros((1, *input_shape_HxWxC)), arch), params).shape[-1]
  for i, width in enumerate((*arch.dense, arch.num_classes)):
    name = f'fc{i + 6}'
    params[name] = layers.dense_init(next(keys), flat, width, weight_init='normal', std=arch.init_std,
                                     bias=bias(name))
    flat = width
  return params


def _features(params, x, arch, conv_shapes=None, ops=layers.PLAIN):
  """The flattened conv5 features; `conv_shapes`, if given, receives each conv layer's output shape."""
  x = x.astype(arch.dtype)
  for i, (_, stride, pad) in enumerate(KERNELS):
    x = jax.nn.relu(ops.conv(params[f'conv{i + 1}'], x, stride=stride, padding=pad, groups=arch.groups[i]))
    if conv_shapes is not None:
      conv_shapes[f'conv{i + 1}'] = x.shape[1:]
    if arch.lrn and NORMALISED[i]:
      x = normalise(x, arch, ops)
    if POOLED[i]:
      x = ops.max_pool(x, 3, 2)
  return x.reshape(x.shape[0], -1)


def towers(arch):
  """How many towers normalise their maps apart: the widest grouping of the network, or 1."""
  return max(arch.groups) if arch.lrn_within_towers else 1


def normalise(x_BxHxWxC, arch, ops=layers.PLAIN):
  """Local response normalisation of conv1's or conv2's maps: within each tower (lrn_within_towers), else across
  all maps."""
  lrn = lambda a: ops.lrn(a, n=arch.lrn_n, k=arch.lrn_k, alpha=arch.lrn_alpha, beta=arch.lrn_beta,
                          alpha_over_n=arch.lrn_alpha_over_n)
  t, c = towers(arch), x_BxHxWxC.shape[-1]
  if t == 1:
    return lrn(x_BxHxWxC)
  # each tower's maps on an axis of their own: the window over the last axis cannot leave a tower
  return lrn(x_BxHxWxC.reshape(*x_BxHxWxC.shape[:-1], t, c // t)).reshape(x_BxHxWxC.shape)


def apply(params, x_BxHxWxC, arch, *, train=False, key=None, ops=layers.PLAIN):
  """Logits (B, num_classes), float32. In training, dropout needs `key`. `ops`: the conv, max_pool and lrn to
  compute with (nets.layers.PLAIN, or faster ones of the same functions from kernels.resolve)."""
  h = _features(params, x_BxHxWxC, arch, ops=ops)
  drop = train and arch.dropout > 0
  keys = jax.random.split(key, len(arch.dense)) if drop else [None] * len(arch.dense)
  for i, k in enumerate(keys):
    if arch.dropout_before_dense:
      h = layers.dropout(h, arch.dropout, key=k, train=train, scaling=arch.dropout_scaling)
    h = jax.nn.relu(layers.dense(params[f'fc{i + 6}'], h))
    if not arch.dropout_before_dense:
      h = layers.dropout(h, arch.dropout, key=k, train=train, scaling=arch.dropout_scaling)
  return layers.dense(params[f'fc{len(arch.dense) + 6}'], h).astype(jnp.promote_types(arch.dtype, jnp.float32))




def layer_shapes(arch, input_shape_HxWxC=(IMAGE_SIZE, IMAGE_SIZE, 3), params=None):
  """{layer: output shape of its neurons (before pooling)} for one image, from the shapes JAX infers."""
  params = params or jax.eval_shape(lambda: init(jax.random.PRNGKey(0), arch, input_shape_HxWxC))
  shapes = {}
  jax.eval_shape(lambda p, x: _features(p, x, arch, shapes), params,
                 jax.ShapeDtypeStruct((1, *input_shape_HxWxC), jnp.float32))
  for i, width in enumerate((*arch.dense, arch.num_classes)):
    shapes[f'fc{i + 6}'] = (width,)
  return shapes


def multiply_adds(arch, input_shape_HxWxC=(IMAGE_SIZE, IMAGE_SIZE, 3)):
  """Multiply-adds of one image's forward pass through the conv and dense layers (a training step: about 3x)."""
  params = jax.eval_shape(lambda: init(jax.random.PRNGKey(0), arch, input_shape_HxWxC))
  total = 0
  for name, shape in layer_shapes(arch, input_shape_HxWxC, params).items():
    w = params[name]['W'].shape
    total += math.prod(shape) * math.prod(w[:-1])  # each output: one multiply-add per weight that feeds it
  return total
