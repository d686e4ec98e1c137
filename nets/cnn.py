"""LeNet-style convolutional nets and image MLPs, built from nets/layers.py and described by an `Arch`.

Each conv block is conv -> ReLU -> [max over feature groups] -> [contrast normalisation] -> [pooling] (with max
pooling and no normalisation, the ReLU comes after the pooling: the same function, computed faster); then the
feature maps are flattened and pass through dense ReLU layers with dropout, and a final dense layer gives the
logits. An `Arch` with no conv blocks is an MLP on the flattened image ("MLP 256-128-100").

Parameters: {'conv1': {'W', 'b'}, ..., 'fc1': {'W', 'b'}, ..., 'out': {'W', 'b'}}.
"""
import dataclasses

import jax
import jax.numpy as jnp

import nets
from nets import layers
from trainnets.errors import require

POOLS = ('max', 'sum', 'avg', 'none')


@dataclasses.dataclass(frozen=True)
class Arch:
  conv: tuple = ()  # ((features, kernel, stride), ...)
  padding: str = 'SAME'
  pool: str = 'max'  # one of POOLS, after every conv block
  pool_window: int = 2
  pool_stride: int = 2  # < pool_window: overlapping pooling
  feature_groups: int = 1  # > 1: max over groups of this many adjacent channels after each conv
  lrn: bool = False  # contrast normalisation across feature maps after each conv block
  lrn_n: int = 5
  lrn_k: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  dense: tuple = (1024,)
  dropout: float = 0.0  # on the dense layers' outputs
  dropout_scaling: str = 'inverted'  # or 'test_time' (nets/layers.dropout)
  num_classes: int = 10

  @classmethod
  def from_config(cls, model_cfg):
    """An Arch from a config's `model` section (its keys are the field names)."""
    return cls(**nets.arch_fields(cls, model_cfg))

  def validate(self):
    """A ConfigError naming the first bad field's key and what is allowed."""
    require(self.pool in POOLS, f'model.pool {self.pool!r} is unknown; choose one of {POOLS}')
    require(all(isinstance(c, tuple) and len(c) == 3 and all(isinstance(v, int) and v >= 1 for v in c)
                for c in self.conv),
            f'model.conv {self.conv} must be (features, kernel, stride) triples of positive integers; write it '
            'like --config.model.conv="((32, 5, 1), (64, 5, 1))"')
    require(self.feature_groups >= 1 and not any(c[0] % self.feature_groups for c in self.conv),
            f'model.feature_groups={self.feature_groups} must divide every conv layer\'s features')
    require(all(isinstance(d, int) and d >= 1 for d in self.dense) and self.num_classes >= 2,
            'model.dense widths must be >= 1 and model.num_classes >= 2')
    require(0 <= self.dropout < 1, f'model.dropout must be in [0, 1), got {self.dropout}')
    require(self.dropout_scaling in layers.DROPOUT_SCALINGS, f'model.dropout_scaling {self.dropout_scaling!r} is '
            f'unknown; choose one of {", ".join(layers.DROPOUT_SCALINGS)}')
    require(self.pool_window >= 1 and self.pool_stride >= 1, 'model.pool_window and model.pool_stride must be >= 1')


def _pool(arch, x, ops):
  if arch.pool == 'none':
    return x
  fn = {'max': ops.max_pool, 'sum': layers.sum_pool, 'avg': layers.avg_pool}[arch.pool]
  return fn(x, arch.pool_window, arch.pool_stride, 'SAME' if arch.pool == 'max' else 'VALID')


def _features(params, x, arch, ops=layers.PLAIN):
  # ReLU and max pooling commute (both take maxima), in values and in gradients; pooling first, the ReLU touches
  # a quarter of the pixels (docs/fashion_mnist/cnn_cpu_performance.md). Not past normalisation, which does not commute.
  pool_first = arch.pool == 'max' and not arch.lrn
  for i, (_, _, stride) in enumerate(arch.conv):
    x = ops.conv(params[f'conv{i + 1}'], x, stride=stride, padding=arch.padding)
    if arch.feature_groups > 1:
      x = layers.feature_group_max(x, arch.feature_groups)
    if pool_first:
      x = jax.nn.relu(_pool(arch, x, ops))
      continue
    x = jax.nn.relu(x)
    if arch.lrn:
      x = ops.lrn(x, n=arch.lrn_n, k=arch.lrn_k, alpha=arch.lrn_alpha, beta=arch.lrn_beta)
    x = _pool(arch, x, ops)
  return x.reshape(x.shape[0], -1)


def init(key, arch, input_shape_HxWxC):
  """Parameters for `arch` on images of shape (H, W, C); He-normal weights, zero biases."""
  keys = iter(jax.random.split(key, len(arch.conv) + len(arch.dense) + 1))
  params, channels = {}, input_shape_HxWxC[-1]
  for i, (features, kernel, _) in enumerate(arch.conv):
    params[f'conv{i + 1}'] = layers.conv_init(next(keys), kernel, channels, features)
    channels = features // arch.feature_groups
  # the flattened size follows from running the feature extractor on a dummy image's shape
  shapes = jax.eval_shape(lambda p: _features(p, jnp.zeros((1, *input_shape_HxWxC)), arch), params)
  width = shapes.shape[-1]
  for i, d in enumerate(arch.dense):
    params[f'fc{i + 1}'] = layers.dense_init(next(keys), width, d)
    width = d
  params['out'] = layers.dense_init(next(keys), width, arch.num_classes)
  return params


def apply(params, x_BxHxWxC, arch, *, train=False, key=None, ops=layers.PLAIN):
  """Logits (B, num_classes). In training, dropout needs `key`. `ops`: the conv, max_pool and lrn to compute with
  (nets.layers.PLAIN, or faster ones of the same functions from kernels.resolve)."""
  h = _features(params, x_BxHxWxC, arch, ops)
  keys = jax.random.split(key, len(arch.dense)) if (train and arch.dropout > 0) else [None] * len(arch.dense)
  for i in range(len(arch.dense)):
    h = jax.nn.relu(layers.dense(params[f'fc{i + 1}'], h))
    h = layers.dropout(h, arch.dropout, key=keys[i], train=train, scaling=arch.dropout_scaling)
  return layers.dense(params['out'], h)
