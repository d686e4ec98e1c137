"""Ablations of experiments/hidden_units.py, the lecture's experiment: step size x initialisation x activation.

  python -m experiments.sweep --sweep=experiments/hidden_units_ablations.py --workdir=workdirs/hu_ablations
  python -m experiments.sweep --sweep=experiments/hidden_units_ablations.py:quick --workdir=workdirs/hu_abl_quick

Each run is the whole sweep of its config (16 seeds of every task, width and depth; `quick`: 2 tasks, widths 2
and 10, depth 1, 4 seeds, 12 epochs) with one setting changed: eta_0 of the one-hidden-layer nets (0.3, 1 as this
project's default (the lecture gives no value), 3), the weight initialisation (the lecture's N(0, 1/d^2) or He's),
and the hidden units' activation (tanh as the lecture, or relu). sweep.md shows, per setting, which of the
lecture's claims hold, and --metric (default claims_holding) any figure of docs/hidden_units/ablations.md's list.
"""
import itertools

import experiments


def get_sweep(arg):
  _, args = experiments.parse_arg(arg, 'hidden_units_ablations.py', options=('quick',))
  runs = []
  for lr, init, act in itertools.product((0.3, 1.0, 3.0), ('lecture', 'he'), ('tanh', 'relu')):
    overrides = {}
    if lr != 1.0:
      overrides['train.learning_rate'] = lr
    if init != 'lecture':
      overrides['model.weight_init'] = init
    if act != 'tanh':
      overrides['model.activation'] = act
    runs.append((f'lr{lr:g}_{init}_{act}', overrides))
  return {'config': 'experiments/hidden_units.py' + (':quick' if 'quick' in args else ''), 'runs': runs,
          'seeds': [0]}
