"""How the Fashion-MNIST CNN's recipe is chosen: candidate lengths and augmentations, judged on the validation split.

  python -m experiments.sweep --sweep=experiments/fashion_mnist_recipe.py --workdir=workdirs/fmnist_recipe \
      --metric=validation_accuracy
  python -m experiments.sweep --sweep=experiments/fashion_mnist_recipe.py:seeds --workdir=workdirs/fmnist_cnn_seeds
  python -m experiments.sweep --sweep=experiments/fashion_mnist_recipe.py:seeds,mlp --workdir=workdirs/fmnist_mlp_seeds

The first command trains each candidate once (seed 0) on 50,000 training images and reports, per candidate, the
accuracy on the 10,000 held out (data.num_validation): the recipe is the candidate with the highest validation
accuracy, and experiments/fashion_mnist.py's defaults are that candidate. The test accuracy each run also records
(evaluated once, at its end) plays no part in the choice. `no_augmentation` is there for a like-for-like comparison
with the benchmark table's rows, which use no augmentation. `seeds` runs the chosen recipe and the MLP with seeds
0, 1 and 2: the headline numbers are their mean and spread.
"""
import experiments


def get_sweep(arg):
  _, args = experiments.parse_arg(arg, 'fashion_mnist_recipe.py', options=('seeds', 'mlp'))
  if 'seeds' in args:
    return {'config': 'experiments/fashion_mnist.py:' + ('mlp' if 'mlp' in args else 'cnn'),
            'runs': [('default', {})], 'seeds': [0, 1, 2]}
  runs = [('epochs12_flips', {'train.epochs': 12}), ('epochs16_flips', {'train.epochs': 16}),
          ('epochs20_flips', {'train.epochs': 20}),
          ('epochs16_flips_shift2', {'train.epochs': 16, 'data.random_shift': 2}),
          ('no_augmentation', {'train.epochs': 20, 'data.random_flip': False})]
  return {'config': 'experiments/fashion_mnist.py:cnn', 'runs': runs, 'seeds': [0]}
