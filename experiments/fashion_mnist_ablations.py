"""Ablations of experiments/fashion_mnist.py: the lecture's CNN components, and MLP width and depth.

  python -m experiments.sweep --sweep=experiments/fashion_mnist_ablations.py:cnn --workdir=workdirs/ablations_cnn
  python -m experiments.sweep --sweep=experiments/fashion_mnist_ablations.py:mlp --workdir=workdirs/ablations_mlp

Each variant changes one thing against the default net and trains on a shorter budget than the full runs (cnn: 4
epochs, 2-4 min each on 2 CPU cores; mlp: 15 epochs, about 1.5 min each), so compare the variants with
each other, not with the full runs' numbers. Pass `:cnn,seeds3` (or `:mlp,seeds3`) for 3 seeds per variant.
"""


def get_sweep(arg):
  args = set(filter(None, (arg or '').split(',')))
  seeds = [0, 1, 2] if 'seeds3' in args else [0]
  if 'cnn' in args:
    return {
        'config': 'experiments/fashion_mnist.py:cnn',
        'common': {'train.epochs': 4},
        'seeds': seeds,
        'runs': [
            ('max_2x2_default', {}),
            ('sum_2x2', {'model.pool': 'sum'}),
            ('avg_2x2', {'model.pool': 'avg'}),
            ('max_3x3_stride2_overlapping', {'model.pool_window': 3}),
            ('contrast_normalisation', {'model.lrn': True}),
            ('feature_group_max_2', {'model.feature_groups': 2}),
        ],
    }
  if 'mlp' in args:
    return {
        'config': 'experiments/fashion_mnist.py:mlp',
        'common': {'train.epochs': 15},
        'seeds': seeds,
        'runs': [
            ('256-128-100_default', {}),
            ('64', {'model.dense': '64'}),
            ('256', {'model.dense': '256'}),
            ('1024', {'model.dense': '1024'}),
            ('256-256', {'model.dense': '256,256'}),
            ('256-256-256-256', {'model.dense': '256,256,256,256'}),
        ],
    }
  raise ValueError(f'argument {arg!r}: pass cnn or mlp (optionally with seeds3)')
