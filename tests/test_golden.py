"""Golden values: the loss and fingerprints of the parameters after one training step from a fixed seed, through
each trainer's own set-up (data order, initialisation, model, loss, optimiser, augmentation), for the
per-example SGD sweep, the Fashion-MNIST CNN and a narrow AlexNet on fake ImageNet.

A fingerprint is the parameters' projection on a fixed random direction: `init` pins the initial parameters,
`update` the change one step made (the gradient times the step size, after the optimiser). Models run with
model.kernels='none' (the plain-JAX definitions; kernels are tested equal to them elsewhere).

When a value changes: if you changed what is computed on purpose (an initialisation, a default, the data order,
the optimiser), check that the new values are what you meant, put them in GOLDEN with the reason in the commit
message; if you did not, it is a bug: the message names which part moved. The tolerance (1e-4 relative) covers
XLA's rounding across versions and machines; any change of meaning moves these values by far more. Adam's first
update is the exception (ADAM_UPDATE_ATOL): it divides each gradient by its own size, so a component whose gradient
is near zero moves by up to the step size (1e-3) when the gradient's last bits do. Between jax 0.10.2 and 0.12.1,
from initial parameters equal but for last bits, the update's fingerprint moved by 0.0018 and 0.0049; a change of
meaning (data, augmentation, step size) moves it by far more than 0.01 (the fingerprints are 0.3 to 0.9).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import alexnet_imagenet
from experiments import fashion_mnist
from experiments import hidden_units
from trainnets.data import pipeline
from trainnets.data import toy2d
from trainnets.training import classifier
from trainnets.training import hidden_units as hidden_units_trainer
from trainnets.training import sharding
from trainnets.training import steps
from trainnets.training import vmap_sweep

RTOL = 1e-4
ADAM_UPDATE_ATOL = 0.01  # ten of Adam's steps, for the update of the runs whose optimiser is Adam (module docstring)
ADAM = ('fashion_mnist_cnn', 'fashion_mnist_cnn_2026_12_05')
GOLDEN = {
    'hidden_units': {'loss': 2.422675609588623, 'init': 0.913495323119853, 'update': -0.5849750817972014},
    'fashion_mnist_cnn': {'loss': 5.0236101150512695, 'init': -14.565116871710678, 'update': -0.8470644089436157},
    # before the validation split: the epoch's order was a shuffle of all 60,000 training images (old workdirs)
    'fashion_mnist_cnn_2026_12_05': {'loss': 5.499014377593994, 'init': -14.565116871710678,
                                     'update': 0.28644284123320723},
    'alexnet_narrow': {'loss': 6.91584587097168, 'init': -9.720053466333486, 'update': -0.016763661144731407},
    # the same run as configured before the paper's dropout scaling and 32 crop offsets (old workdirs' values)
    'alexnet_narrow_2026_12_05': {'loss': 6.925662517547607, 'init': -9.720053466333486,
                                  'update': 0.0006484122361568624},
}


def fingerprint(tree):
  """sum(leaf * r) over the leaves, r ~ N(0, 1) fixed per leaf by its position: one number that any change of any
  parameter moves."""
  total = 0.0
  for i, leaf in enumerate(jax.tree.leaves(tree)):
    leaf = np.asarray(leaf, np.float64)
    total += float((leaf * np.random.default_rng(i).standard_normal(leaf.shape)).sum())
  return total


def check(name, loss, params0, params1):
  got = {'loss': float(loss), 'init': fingerprint(params0),
         'update': fingerprint(jax.tree.map(lambda a, b: np.asarray(b, np.float64) - np.asarray(a, np.float64),
                                            params0, params1))}
  want = GOLDEN[name]
  what = {'loss': 'the loss of the first step (model, initialisation, data or loss function)',
          'init': 'the initial parameters (initialisation or seed handling)',
          'update': 'the first update (gradient, optimiser, step size, weight decay or augmentation)'}
  moved = [f'{what[k]}: {want[k]!r} -> {got[k]!r}' for k in want
           if want[k] is None or not np.isclose(got[k], want[k], rtol=RTOL,
                                                atol=ADAM_UPDATE_ATOL if k == 'update' and name in ADAM else 0)]
  assert not moved, (f'{name}: one training step from the fixed seed no longer gives its golden values; changed '
                     f'{"; ".join(moved)}. If that change was meant, set GOLDEN[{name!r}] = {got!r} in '
                     'tests/test_golden.py and say why in the commit; otherwise it is a bug (module docstring).')


def test_one_step_of_the_per_example_sgd_sweep():
  """Four models of the lecture's experiment (the two tasks, 2 and 8 tanh units, seed 0), one SGD step of the
  vmapped trainer on the first training example of each task."""
  config = hidden_units.get_config()
  depth = 1
  models = [vmap_sweep.Model(task, (w,), config.model.weight_init, 0) for task in config.data.tasks[:2]
            for w in (2, 8)]
  datasets = {}
  for m in models:
    (x, y), test = toy2d.train_test(config.data.seed, m.task, config.data.num_train, config.data.num_test,
                                    config.data.margin)
    datasets[m.dataset] = ((x[:1], y[:1]), test)
  train_cfg = ml_collections.ConfigDict(hidden_units_trainer.train_config_for_depth(config, depth).to_dict())
  train_cfg.epochs = 1
  run = vmap_sweep.train(models, datasets, config.model, train_cfg, hidden_units_trainer.tx(config, depth))
  check('hidden_units', run['curves']['train_loss'][:, 0].sum(), run['params0'], run['params'])  # loss before it


def classifier_one_step(config):
  """(loss, initial params, params after one step) of the classifier trainer's own set-up and first batch."""
  config.model.kernels = 'none'
  setup = classifier._setup(config)
  state = setup.fresh_state()
  params0 = jax.tree.map(np.asarray, state.params)
  train_step = steps.make_train_step(setup.apply_fn, setup.tx, setup.mesh, setup.state_sharding,
                                     preprocess=getattr(setup.dataset, 'device_train', None))
  batches = setup.dataset.train_batches(batch_size=config.train.batch_size, seed=config.seed, epoch=0)
  batch = next(pipeline.prefetch_to_device(batches, sharding.batch_sharding(setup.mesh)))
  state, metrics = train_step(state, batch)
  return metrics['loss'], params0, state.params


def test_one_step_of_the_fashion_mnist_cnn(fashion_mnist_tfds):
  config = fashion_mnist.get_config('cnn')
  config.data.tfds_dir = fashion_mnist_tfds
  check('fashion_mnist_cnn', *classifier_one_step(config))
  config.data.num_validation = 0
  check('fashion_mnist_cnn_2026_12_05', *classifier_one_step(config))


def test_one_step_of_a_narrow_alexnet_on_fake_imagenet(tmp_path):
  """The 2012 network's layers, groups, LRN, dropout and the device-side augmentation, at an eighth of its widths
  and a 64th of its dense layers, on 20 fake images (16 of them trained on)."""
  config = alexnet_imagenet.get_config('quick,narrow')
  config.data.tfds_dir = str(tmp_path)
  check('alexnet_narrow', *classifier_one_step(config))
  config.model.dropout_scaling, config.data.crop_positions = 'inverted', 33
  config.data.num_validation, config.data.fake_images = 0, 16
  check('alexnet_narrow_2026_12_05', *classifier_one_step(config))


def test_the_fingerprint_sees_one_changed_parameter():
  params = {'a': jnp.arange(6.0).reshape(2, 3), 'b': [jnp.ones(4)]}
  changed = {'a': params['a'].at[1, 2].add(1e-2), 'b': params['b']}
  assert fingerprint(params) == fingerprint(jax.tree.map(np.asarray, params))
  assert not np.isclose(fingerprint(changed), fingerprint(params), rtol=RTOL, atol=0)
