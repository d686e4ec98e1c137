"""Fashion-MNIST with the lecture's convolutional-net components: rows of the dataset's benchmark table.

Commands:
  python train.py --config=experiments/fashion_mnist.py:mlp --workdir=workdirs/fmnist_mlp
  python train.py --config=experiments/fashion_mnist.py:cnn --workdir=workdirs/fmnist_cnn
  python train.py --config=experiments/fashion_mnist.py:cnn,quick --workdir=/tmp/fmnist_quick   # seconds
  python eval.py  --config=experiments/fashion_mnist.py:cnn --workdir=workdirs/fmnist_cnn [--step=N]

Data: TFDS's fashion_mnist, prepared offline from the four original files (data/fashion_mnist.py says where it
looks) into data.tfds_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets) on first use.

Expected (the benchmark table of github.com/zalandoresearch/fashion-mnist, and this project's targets):
  mlp  "MLP 256-128-100": 0.8833 there; target >= 0.89 test accuracy.
  cnn  "2 Conv+pooling" (2 conv 5x5 32/64, 2x2 max pooling, FC 1024): 0.876 and 0.916 there; target >= 0.925,
       within 15 minutes on 2 CPU cores. The measured numbers and times are in README.md.
Ablations are overrides of `model`: pool (max/sum/avg), pool_window/pool_stride (3/2 overlaps), lrn (contrast
normalisation), feature_groups (max over groups of channels), dense widths.
"""
import os

import ml_collections

KINDS = ('mlp', 'cnn')


def get_config(arg='cnn'):
  args = set(filter(None, (arg or 'cnn').split(',')))
  kinds = args & set(KINDS)
  if args - set(KINDS) - {'quick'} or len(kinds) > 1:
    raise ValueError(f'arguments {sorted(args)} for fashion_mnist.py: use one of {KINDS}, optionally with quick '
                     '(e.g. cnn,quick)')
  kind = kinds.pop() if kinds else 'cnn'
  c = ml_collections.ConfigDict()
  c.experiment = 'fashion_mnist'
  c.trainer = 'classifier'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'fashion_mnist'
  c.data.tfds_dir = os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  c.data.source_dir = ''  # a directory with the four original files; see data/fashion_mnist.py
  c.data.num_train = 0  # 0: all 60,000
  c.data.num_test = 0  # 0: all 10,000
  c.data.random_flip = True  # mirror training images left-right with probability 1/2
  c.data.random_shift = 0  # > 0: translate training images by up to this many pixels each way

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cnn'
  c.model.conv = ((32, 5, 1), (64, 5, 1))  # (features, kernel, stride) per conv block
  c.model.padding = 'SAME'
  c.model.pool = 'max'  # max, sum, avg or none, after each conv block
  c.model.pool_window = 2
  c.model.pool_stride = 2  # smaller than pool_window: overlapping pooling
  c.model.feature_groups = 1  # > 1: max over groups of this many adjacent channels
  c.model.lrn = False  # contrast normalisation across feature maps after each conv block
  c.model.lrn_n = 5
  c.model.lrn_k = 2.0
  c.model.lrn_alpha = 1e-4
  c.model.lrn_beta = 0.75
  c.model.dense = (1024,)
  c.model.dropout = 0.5
  c.model.num_classes = 10
  c.model.kernels = 'auto'  # speed only, the same function: auto, none or names from kernels/__init__.py

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # global: split over the devices
  c.train.eval_batch_size = 1000
  c.train.epochs = 20
  c.train.optimizer = 'adam'
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = 'cosine'
  c.train.lr_boundaries = (0.5, 0.75)  # for lr_schedule='step'
  c.train.momentum = 0.9  # for optimizer='sgd'
  c.train.weight_decay = 0.0
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3

  if kind == 'mlp':
    c.model.conv = ()
    c.model.dense = (256, 128, 100)
    c.model.dropout = 0.2
    c.data.random_flip = False
    c.train.epochs = 30
  if 'quick' in args:
    c.data.num_train = 2048
    c.data.num_test = 1000
    c.train.epochs = 2
    c.train.log_every = 4
    c.train.checkpoint_every = 8
  return c
