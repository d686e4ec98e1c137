"""Fashion-MNIST with the lecture's convolutional-net components: rows of the dataset's benchmark table.

Commands:
  python train.py --config=experiments/fashion_mnist.py:mlp --workdir=workdirs/fmnist_mlp
  python train.py --config=experiments/fashion_mnist.py:cnn --workdir=workdirs/fmnist_cnn
  python train.py --config=experiments/fashion_mnist.py:cnn,quick --workdir=/tmp/fmnist_quick   # seconds
  python eval.py  --config=experiments/fashion_mnist.py:cnn --workdir=workdirs/fmnist_cnn [--step=N]

Data: TFDS's fashion_mnist, prepared offline from the four original files (trainnets/data/fashion_mnist.py says where it
looks) into data.tfds_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets) on first use.

Expected (the benchmark table of github.com/zalandoresearch/fashion-mnist, and this project's targets):
  mlp  "MLP 256-128-100": 0.8833 there; target >= 0.89 test accuracy.
  cnn  "2 Conv+pooling" (2 conv 5x5 32/64, 2x2 max pooling, FC 1024): 0.876 and 0.916 there; target >= 0.925,
       within 15 minutes on 2 CPU cores. The measured numbers and times: README.md, docs/fashion_mnist.md.
Ablations are overrides of `model`: pool (max/sum/avg), pool_window/pool_stride (3/2 overlaps), lrn (contrast
normalisation), feature_groups (max over groups of channels), dense widths.
"""
import experiments
from experiments import defaults
from trainnets import config_keys as keys


def get_config(arg='cnn'):
  kind, args = experiments.parse_arg(arg, 'fashion_mnist.py', variants=('mlp', 'cnn'), options=('quick',),
                                     default='cnn')
  c = defaults.classifier()
  c.experiment = 'fashion_mnist'

  c.data.name = 'fashion_mnist'
  c.data.source_dir = ''  # a directory with the four original files; see trainnets/data/fashion_mnist.py
  keys.how(c, 'data.source_dir')
  c.data.random_flip = True  # mirror training images left-right with probability 1/2
  c.data.random_shift = 0  # > 0: translate training images by up to this many pixels each way

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
  c.model.num_classes = 10

  c.train.epochs = 20
  c.train.optimizer = 'adam'
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = 'cosine'

  if kind == 'mlp':
    c.model.conv = ()
    c.model.dense = (256, 128, 100)
    c.model.dropout = 0.2
    c.data.random_flip = False
    c.train.epochs = 30
  if 'quick' in args:
    c.data.num_train = 2048
    c.data.num_validation = 1000
    c.data.num_test = 1000
    c.train.epochs = 2
    c.train.log_every = 4
    c.train.checkpoint_every = 8
  return c
