"""The defaults every classifier experiment starts from: each key the classifier trainer reads, so an experiment
file sets only what differs and a misspelt override is refused (configs are locked).

Keys a dataset or model adds (data.source_dir, model.conv, ...) are set by the experiment that uses it.
"""
import os

import ml_collections

from trainnets import config_keys as keys


def classifier():
  c = ml_collections.ConfigDict()
  c.experiment = ''  # set by the experiment: names its results and its sweeps
  c.trainer = 'classifier'  # trainnets/training/classifier.py
  c.seed = 0  # initialisation, dropout and the data order

  c.data = ml_collections.ConfigDict()
  c.data.name = ''  # a dataset's NAME (trainnets/data/<module>.py)
  c.data.tfds_dir = os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  keys.how(c, 'data.tfds_dir')
  c.data.num_train = 0  # 0: the whole training split
  c.data.num_test = 0  # 0: the whole test split
  # Training examples held out for validation: every per-epoch evaluation, the plateau rule and any choice of
  # recipe read them; the test split is evaluated once, at the end. 0: per-epoch evaluation on the test split
  # (what workdirs made before the key did).
  c.data.num_validation = 10_000
  keys.before(c, 'data.num_validation', 0)

  c.model = ml_collections.ConfigDict()
  c.model.name = ''  # a model of nets/ (nets/<name>.py)
  c.model.dropout = 0.5
  c.model.dropout_scaling = 'inverted'  # kept units x 1/(1-p) in training; 'test_time': outputs x (1-p) at test
  keys.before(c, 'model.dropout_scaling', 'inverted')
  c.model.kernels = 'auto'  # speed only, the same function: auto, none or names from trainnets/kernels/__init__.py
  keys.how(c, 'model.kernels')

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # global: split over the devices
  c.train.eval_batch_size = 1000
  keys.how(c, 'train.eval_batch_size')
  c.train.epochs = 10
  c.train.optimizer = 'sgd'  # sgd or adam; trainnets/training/optim.py describes every optimiser and schedule key
  keys.before(c, 'train.optimizer', 'sgd')
  c.train.learning_rate = 0.01
  c.train.momentum = 0.9  # for optimizer='sgd'
  c.train.momentum_form = 'trace'  # where the step size enters momentum: 'trace' (optax) or 'velocity' (AlexNet)
  keys.before(c, 'train.momentum_form', 'trace')
  c.train.weight_decay = 0.0
  keys.before(c, 'train.weight_decay', 0.0)
  c.train.weight_decay_on = 'weights'  # or 'all': biases too (trainnets/training/optim.py says whose choice each is)
  # runs before the key decayed every parameter; without weight decay the choice changes nothing
  keys.before(c, 'train.weight_decay_on', lambda old: 'all' if old.get('train.weight_decay') else 'weights')
  c.train.lr_schedule = 'constant'
  c.train.lr_decay_steps = 0  # for lr_schedule='inverse_time'
  keys.before(c, 'train.lr_decay_steps', 0)
  c.train.lr_boundaries = (0.5, 0.75)  # for lr_schedule='step'
  c.train.plateau_patience = 5  # for lr_schedule='plateau': evaluations (epochs) without an improvement
  c.train.plateau_min_delta = 0.001  # of top-1 error
  c.train.plateau_factor = 10.0
  c.train.plateau_reductions = 3
  c.train.shard_dense = False  # True: split the dense layers' weights over the devices instead of replicating them
  c.train.log_every = 50  # steps between metrics.jsonl rows
  keys.how(c, 'train.log_every')
  c.train.progress_every_s = 30.0  # seconds between progress lines where stderr is not a terminal (a log file)
  keys.how(c, 'train.progress_every_s')
  c.train.profile_steps = ()  # (first, last): a jax.profiler trace of those steps in WORKDIR/profile
  keys.how(c, 'train.profile_steps')
  c.train.checkpoint_every = 500  # steps between checkpoints
  keys.how(c, 'train.checkpoint_every')
  c.train.keep_checkpoints = 3
  keys.how(c, 'train.keep_checkpoints')

  c.eval = ml_collections.ConfigDict()
  c.eval.crops = 1  # views per test image in the final evaluation: 1 (centre) or 10 (where the dataset has them)
  keys.how(c, 'eval.crops')
  keys.before(c, 'eval.crops', 1)

  c.reference = ml_collections.ConfigDict()  # published (top-1, top-5) errors to show beside this run's
  return c
