"""AlexNet on ImageNet (Krizhevsky, Sutskever and Hinton, NIPS 2012): the network, the data and the recipe.

Commands (arguments combine with commas):
  python train.py --config=experiments/alexnet_imagenet.py --workdir=workdirs/alexnet            # the 2012 network
  python train.py --config=experiments/alexnet_imagenet.py:single --workdir=...      # one tower, no groups
  python train.py --config=experiments/alexnet_imagenet.py:torchvision --workdir=... # 64-192-384-256-256, no LRN
  python train.py --config=experiments/alexnet_imagenet.py:bf16 --workdir=...        # bfloat16 mixed precision
  python train.py --config=experiments/alexnet_imagenet.py:quick --workdir=/tmp/alexnet_quick  # fake data, minutes
  python train.py --config=experiments/alexnet_imagenet.py:quick,narrow --workdir=...  # 1/8 the widths: seconds
  python eval.py  --config=experiments/alexnet_imagenet.py --workdir=workdirs/alexnet \
      [--ensemble=workdirs/alexnet_s1,workdirs/alexnet_s2,...]     # 10-crop top-1/top-5, the five-model average

Data: TFDS `imagenet2012` from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual directory,
then the prepared store of 256x256 images that training reads (trainnets/data/imagenet.py says where and how). `quick`
keeps the real network at full resolution (224x224x3, 61M parameters) but trains on 20 fake JPEGs that it writes
in ImageNet's archive format, for 4 steps: it proves the code path, not the accuracy.

The recipe (section 5 of the paper): SGD with momentum 0.9, weight decay 0.0005, batch 128, learning rate 0.01
divided by 10 when the validation error stops improving (three times over the run), about 90 epochs;
weights N(0, 0.01^2), biases 1 in conv2, conv4, conv5 and the hidden dense layers. Evaluation: the softmax
outputs of 10 crops (four corners and centre, and their mirror images) averaged, on the 50,000 validation
images.

Expected (validation set of ILSVRC 2012):
  one model (the paper, Table 2)               40.7% top-1 error, 18.2% top-5 error
  five models averaged (eval.py --ensemble)    38.1% top-1,       16.4% top-5
  torchvision's variant (its published single centre crop)  43.5% top-1, 20.9% top-5
results.md puts the measured errors beside these. Not measured yet: this code has not been trained on the real
ImageNet (docs/alexnet.md).
"""
import experiments
from experiments import defaults
from trainnets import config_keys as keys


def get_config(arg='paper'):
  variant, args = experiments.parse_arg(arg, 'alexnet_imagenet.py', variants=('paper', 'single', 'torchvision'),
                                        options=('bf16', 'quick', 'narrow'), default='paper')
  c = defaults.classifier()
  c.experiment = 'alexnet_imagenet'

  c.data.name = 'imagenet2012'
  c.data.manual_dir = ''  # '' : $IMAGENET_MANUAL_DIR, else <tfds_dir>/downloads/manual
  keys.how(c, 'data.manual_dir')
  c.data.fake_images = 0  # > 0: write and use this many fake images in ImageNet's format (tests, quick)
  c.data.store_dir = ''  # the prepared 256x256 store; '': <tfds_dir>/imagenet2012_256 (trainnets/data/imagenet.py)
  keys.how(c, 'data.store_dir')
  c.data.pca = 'computed'  # PCA colour noise from the training set's RGB covariance; 'published': fb.resnet.torch's
  keys.before(c, 'data.pca', 'published')
  c.data.augment_on = 'device'  # mean, crop, flip and colour noise in the jitted step; 'host': in tf.data
  keys.before(c, 'data.augment_on', 'host')
  c.data.crop_positions = 32  # training crop offsets 0..31 each way: the paper's 32 x 32 x 2 = 2048 views; max 33
  keys.before(c, 'data.crop_positions', 33)
  # the prepared store replaced the shuffle buffer and the mean of an image subset: uniform permutations per
  # epoch, the mean of every training image
  keys.retired(c, 'data.shuffle_buffer', 20_000)
  keys.retired(c, 'data.mean_images', 0)

  c.model.name = 'alexnet'
  c.model.variant = 'torchvision' if variant == 'torchvision' else 'paper'
  if variant != 'torchvision':
    c.model.groups = (1, 1, 1, 1, 1) if variant == 'single' else (1, 2, 1, 2, 2)
    c.model.lrn = True
    c.model.lrn_alpha_over_n = False  # True: Caffe's and PyTorch's alpha / n
    c.model.lrn_within_towers = True  # each tower normalises its own maps, as each GPU did; False: across both
    keys.before(c, 'model.lrn_within_towers', False)
    c.model.dropout_scaling = 'test_time'  # the paper's: outputs x 0.5 at test time; 'inverted': x 2 in training
  # model.kernels chooses what these chose: the split groups and the space-to-depth conv1 of older runs
  keys.retired(c, 'model.group_impl', 'split')
  keys.retired(c, 'model.space_to_depth', True)
  c.model.bias_one = 1.0  # reproductions report that 1 can stall training; 0.1 is a common choice
  c.model.init_std = 0.01
  c.model.dtype = 'bfloat16' if 'bf16' in args else 'float32'

  c.train.eval_batch_size = 100  # images; with 10 crops, 1,000 views per batch
  c.train.epochs = 90
  c.train.weight_decay = 0.0005
  c.train.momentum_form = 'velocity'  # the paper's v <- 0.9 v - 0.0005 eps w - eps dL/dw, w <- w + v
  c.train.lr_schedule = 'plateau'  # the paper's: divided by 10 when the validation error stops improving
  c.train.log_every = 100
  c.train.checkpoint_every = 2000

  c.eval.crops = 10  # the final evaluation and eval.py; per-epoch validation uses the centre crop

  if variant == 'torchvision':
    c.reference.torchvision_variant_1_crop = (0.435, 0.209)
  else:
    c.reference.paper_1_model = (0.407, 0.182)
    c.reference.paper_5_models = (0.381, 0.164)

  if 'narrow' in args:  # the same layers at an eighth of the widths (a 64th of the dense layers): for tests
    c.model.widths = (12, 32, 48, 48, 32)
    c.model.dense = (64, 64)
  if 'quick' in args:
    c.data.fake_images = 20
    c.data.num_validation = 4  # of the 20 fake training images, stratified by class
    c.data.num_test = 8
    c.train.batch_size = 8
    c.train.eval_batch_size = 8
    c.train.epochs = 2
    c.train.log_every = 1
    c.train.checkpoint_every = 2
  return c
