"""AlexNet on ImageNet (Krizhevsky, Sutskever and Hinton, NIPS 2012): the network, the data and the recipe.

Commands (arguments combine with commas):
  python train.py --config=experiments/alexnet_imagenet.py --workdir=workdirs/alexnet            # the 2012 network
  python train.py --config=experiments/alexnet_imagenet.py:single --workdir=...      # one tower, no groups
  python train.py --config=experiments/alexnet_imagenet.py:torchvision --workdir=... # 64-192-384-256-256, no LRN
  python train.py --config=experiments/alexnet_imagenet.py:bf16 --workdir=...        # bfloat16 mixed precision
  python train.py --config=experiments/alexnet_imagenet.py:quick --workdir=/tmp/alexnet_quick  # fake data, minutes
  python eval.py  --config=experiments/alexnet_imagenet.py --workdir=workdirs/alexnet \
      [--ensemble=workdirs/alexnet_s1,workdirs/alexnet_s2,...]     # 10-crop top-1/top-5, the five-model average

Data: TFDS `imagenet2012` from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual directory
(data/imagenet.py says where and how). `quick` keeps the real network at full resolution (224x224x3, 61M
parameters) but trains on 16 fake JPEGs that it writes in ImageNet's archive format, for 4 steps: it proves the
code path, not the accuracy.

The recipe (section 5 of the paper): SGD with momentum 0.9, weight decay 0.0005, batch 128, learning rate 0.01
divided by 10 when the validation error stops improving (three times over the run), about 90 epochs;
weights N(0, 0.01^2), biases 1 in conv2, conv4, conv5 and the hidden dense layers. Evaluation: the softmax
outputs of 10 crops (four corners and centre, and their mirror images) averaged, on the 50,000 validation
images.

Expected (validation set of ILSVRC 2012):
  one model (the paper, Table 2)               40.7% top-1 error, 18.2% top-5 error
  five models averaged (eval.py --ensemble)    38.1% top-1,       16.4% top-5
  torchvision's variant (its published single centre crop)  43.5% top-1, 20.9% top-5
results.md puts the measured errors beside these. Not measured here: the development machines have no ImageNet
and no GPU (README.md, "AlexNet on ImageNet").
"""
import os

import ml_collections

ARGS = ('paper', 'single', 'torchvision', 'bf16', 'quick')


def get_config(arg='paper'):
  args = set(filter(None, (arg or 'paper').split(',')))
  variants = args & {'paper', 'single', 'torchvision'}
  if args - set(ARGS) or len(variants) > 1:
    raise ValueError(f'arguments {sorted(args)} for alexnet_imagenet.py: use at most one of paper, single, '
                     f'torchvision, optionally with bf16 and quick (e.g. torchvision,quick)')
  variant = variants.pop() if variants else 'paper'
  c = ml_collections.ConfigDict()
  c.experiment = 'alexnet_imagenet'
  c.trainer = 'classifier'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'imagenet2012'
  c.data.tfds_dir = os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  c.data.manual_dir = ''  # '' : $IMAGENET_MANUAL_DIR, else <tfds_dir>/downloads/manual
  c.data.fake_images = 0  # > 0: write and use this many fake images in ImageNet's format (tests, quick)
  c.data.num_train = 0  # 0: all 1,281,167
  c.data.num_test = 0  # 0: all 50,000 validation images
  c.data.shuffle_buffer = 20_000  # examples; files are shuffled too, every epoch with its own seed
  c.data.mean_images = 0  # training images in the per-pixel mean (0: all, as the paper)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'alexnet'
  c.model.variant = 'torchvision' if variant == 'torchvision' else 'paper'
  if variant != 'torchvision':
    c.model.groups = (1, 1, 1, 1, 1) if variant == 'single' else (1, 2, 1, 2, 2)
    c.model.lrn = True
    c.model.lrn_alpha_over_n = False  # True: Caffe's and PyTorch's alpha / n
  c.model.bias_one = 1.0  # reproductions report that 1 can stall training; 0.1 is a common choice
  c.model.init_std = 0.01
  c.model.dropout = 0.5
  c.model.dtype = 'bfloat16' if 'bf16' in args else 'float32'
  c.model.kernels = 'auto'  # speed only, the same function: auto, none or names from kernels/__init__.py

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # global: split over the devices
  c.train.eval_batch_size = 100  # images; with 10 crops, 1,000 views per batch
  c.train.epochs = 90
  c.train.optimizer = 'sgd'
  c.train.momentum = 0.9
  c.train.weight_decay = 0.0005
  c.train.learning_rate = 0.01
  c.train.lr_schedule = 'plateau'
  c.train.lr_boundaries = (0.5, 0.75)  # for lr_schedule='step'
  c.train.plateau_patience = 5  # evaluations (epochs) without an improvement
  c.train.plateau_min_delta = 0.001  # of top-1 error
  c.train.plateau_factor = 10.0
  c.train.plateau_reductions = 3
  c.train.shard_dense = False  # True: split fc6-fc8's weights over the devices instead of replicating them
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.crops = 10  # the final evaluation and eval.py; per-epoch validation uses the centre crop

  c.reference = ml_collections.ConfigDict()  # published (top-1, top-5) validation errors, shown in results.md
  if variant == 'torchvision':
    c.reference.torchvision_variant_1_crop = (0.435, 0.209)
  else:
    c.reference.paper_1_model = (0.407, 0.182)
    c.reference.paper_5_models = (0.381, 0.164)

  if 'quick' in args:
    c.data.fake_images = 16
    c.data.num_test = 8
    c.data.shuffle_buffer = 16
    c.train.batch_size = 8
    c.train.eval_batch_size = 8
    c.train.epochs = 2
    c.train.log_every = 1
    c.train.checkpoint_every = 2
  return c
