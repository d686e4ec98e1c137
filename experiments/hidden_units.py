"""The lecture's hidden-unit experiments on 2-D tasks: what hidden units, depth and initialisation do.

Command (the README's `make reproduce` runs exactly this):
  python train.py --config=experiments/hidden_units.py --workdir=workdirs/hidden_units
  python train.py --config=experiments/hidden_units.py:quick --workdir=/tmp/hu_quick   # seconds, for a smoke test

What it trains: tanh nets with per-example SGD on the hinge loss (the lecture's algorithm: a random example each
step, a step size eta_k that shrinks with k), on the 2-D tasks of trainnets/data/toy2d.py, 16 seeds per setting, for
hidden units 1..32 at depths 1..3, the single-layer (linear) net, and all-zero initialisation. Every setting of
one depth is one compiled program (vmap over models, scan over examples).

The lecture writes eta and eta_k and gives no values: the schedule eta_k = eta_0 / (1 + k / 2000) and
eta_0 = 1 for one hidden layer (0.3 for deeper nets) are this project's choices, made so that the nets train
within 100 epochs; every claim in results.md names them.

What results.md reports, measured on every run (docs/hidden_units/results.md holds the default run's): the
lecture's claims as experiments/hidden_units_claims.py states them (quoted, with the runs each reads, what is
measured and the criterion), then accuracy per task, depth and width, its spread over seeds and the parameter
counts.

The trainer is trainnets/training/hidden_units.py; experiments/reports/hidden_units.py turns its runs into the claims
table, results.md and the figures.
"""
import ml_collections

import experiments
from trainnets import config_keys as keys
from trainnets.data import toy2d


def get_config(arg=None):
  """Default: the full reproduction. `quick`: 2 tasks, widths 2 and 10, depth 1, 4 seeds, 12 epochs."""
  _, args = experiments.parse_arg(arg, 'hidden_units.py', options=('quick',))
  c = ml_collections.ConfigDict()
  c.experiment = 'hidden_units'
  c.trainer = 'hidden_units'
  c.seed = 0  # model seeds are seed, seed + 1, ..., seed + num_seeds - 1
  c.num_seeds = 16

  c.data = ml_collections.ConfigDict()
  c.data.tasks = toy2d.TASKS
  c.data.num_train = 200
  c.data.num_test = 1000
  c.data.margin = 0.05  # points this close to the true boundary are redrawn
  c.data.seed = 0  # the data sets' seed
  c.data.seed_per_model = False  # True: model seed s trains on its own draw of each task (data seed + s - seed)

  c.model = ml_collections.ConfigDict()
  c.model.activation = 'tanh'
  c.model.hidden_units = (1, 2, 3, 4, 6, 8, 10, 16, 32)
  c.model.depths = (1, 2, 3)  # hidden layers, each of the swept width
  c.model.include_linear = True  # also train the single-layer net (no hidden layer)
  c.model.weight_init = 'lecture'  # N(0, 1/d^2); see nets/init.py
  c.model.weight_std = 0.1  # used by weight_init='normal'
  c.model.offset_init = 'zeros'  # the lecture's figures use zero offsets
  c.model.offset_std = 0.1  # used by offset_init='normal'

  c.train = ml_collections.ConfigDict()
  c.train.loss = 'hinge'
  c.train.optimizer = 'sgd'
  c.train.batch_size = 1  # 1: the lecture's per-example SGD; more: minibatch SGD
  c.train.sampling = 'uniform'  # 'uniform': a random example each step; 'permutation': shuffled passes
  c.train.epochs = 100  # an epoch is num_train / batch_size steps
  c.train.stop_at_zero_loss = True
  c.train.learning_rate = 1.0  # eta_0 of the linear and one-hidden-layer nets (this project's; the lecture has none)
  # eta_0 for nets of 2+ hidden layers: per-example steps of 1.0 make them diverge (measured: median accuracy
  # falls to the majority class at depth 3), 0.3 trains them; 0.3 in turn is too slow for depth 1 within 100
  # epochs. One step size for every depth would hide what depth does behind a badly tuned rate.
  c.train.deep_learning_rate = 0.3
  c.train.lr_schedule = 'inverse_time'
  c.train.lr_decay_steps = 2000
  keys.before(c, 'train.lr_decay_steps', 0)
  c.train.lr_boundaries = (0.5, 0.75)  # for lr_schedule='step'
  c.train.momentum = 0.0
  c.train.momentum_form = 'trace'  # with momentum: 'trace' (optax) or 'velocity' (trainnets/training/optim.py)
  c.train.weight_decay = 0.0
  c.train.weight_decay_on = 'weights'  # or 'all': offsets too
  c.train.unroll = 1  # lax.scan unroll factor (speed only)
  keys.how(c, 'train.unroll')
  # XLA:CPU's parallel task assigner, which splits a program's large loops over the shared intra-op threads (speed
  # only). With one JAX device per core each device's program has a core already, and the split makes them wait on
  # each other, so it is off (docs/performance.md).
  c.train.parallel_tasks = False
  keys.how(c, 'train.parallel_tasks')
  # The step's layout (speed only; the same bits, tested): 'models_first' vmaps the nets' step over a leading model
  # axis; 'models_last' lays every array out with the model axis last, which XLA:CPU vectorises over the models
  # (per-example SGD on the CPU); 'auto' takes models_last where it is faster (docs/performance.md).
  c.train.layout = 'auto'
  keys.how(c, 'train.layout')
  c.train.progress_every_s = 30.0  # seconds between progress lines where stderr is not a terminal (a log file)
  keys.how(c, 'train.progress_every_s')
  # Each width is padded to the smallest of these that holds it, one compiled program per (depth, padded width); a
  # 1-unit net then costs a 10-wide one, not a 32-wide one. It defines the run: another padding computes other last
  # bits (XLA vectorises over the padded units), and SGD carries them into the records (docs/hidden_units.md).
  c.train.pad_widths = (10, 32)

  c.claims = ml_collections.ConfigDict()
  # Which runs the claims of experiments/hidden_units_claims.py read.
  c.claims.easy_task = 'corner'  # a task 2 units solve
  c.claims.hard_task = 'stripes'  # the lecture's harder task: 2 units fail, 10 succeed
  c.claims.few_units = 2
  c.claims.many_units = 10
  c.claims.at_epoch = 10  # "after about 10 epochs"
  c.claims.solved_accuracy = 0.99  # solved: median training accuracy over seeds at least this; not solved: below
  c.claims.zero_init = True  # also train all-zero-initialised nets on the two claim tasks

  if 'quick' in args:
    c.num_seeds = 4
    c.data.tasks = ('corner', 'stripes')
    c.data.num_train = 100
    c.data.num_test = 200
    c.model.hidden_units = (2, 10)
    c.model.depths = (1,)
    c.train.epochs = 12
    c.train.lr_decay_steps = 1000
  return c
