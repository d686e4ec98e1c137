"""The hidden-units claims table: one criterion for solved and not solved, texts that follow the config, and every
width where accuracy falls reported. On synthetic records, so each verdict is known in advance."""
import pytest

from experiments import hidden_units as config_lib
from experiments.reports import hidden_units as report


def records(config, accuracy):
  """Records of depth-1 nets: accuracy[(task, width)] is the list of per-seed final training accuracies."""
  at = config.claims.at_epoch
  out = []
  for (task, width), accs in accuracy.items():
    for seed, a in enumerate(accs):
      out.append({'task': task, 'hidden_units': width, 'depth': 1, 'init': config.model.weight_init, 'seed': seed,
                  'epochs': config.train.epochs, 'solved': a == 1.0, 'train_accuracy': a, 'test_accuracy': a,
                  f'train_accuracy_epoch{at}': a, 'weights_moved': 1.0})
  return out


def quick(**overrides):
  c = config_lib.get_config('quick')
  c.claims.zero_init = False
  c.model.include_linear = False  # the records below are of depth-1 nets only
  c.claims.at_epoch = c.train.epochs  # the same statistic for the "after about" claims and the final ones
  for k, v in overrides.items():
    section, key = k.split('.')
    c[section][key] = v
  return c


def verdicts(config, accuracy):
  return {c['claim']: c for c in report.claims(records(config, accuracy), config, {})}


def test_solved_and_not_solved_are_one_criterion_read_both_ways():
  """The same records, read as the easy and as the hard task, can never be both solved and not solved: median
  0.995 with no seed at zero loss was 'solved' and 'can no longer solve' at once under the old two criteria."""
  c = quick(**{'claims.easy_task': 'stripes', 'claims.hard_task': 'stripes'})
  almost = [0.995, 0.995, 0.99, 1.0 - 1e-3]
  acc = {('stripes', 2): almost, ('stripes', 10): [1.0] * 4, ('corner', 2): [0.9] * 4, ('corner', 10): [1.0] * 4}
  out = list(verdicts(c, acc).values())
  easy, hard = out[0], out[2]
  assert 'solve stripes' in easy['claim'] and 'does not find' in hard['claim']
  assert easy['holds'] != hard['holds'], 'one setting cannot be solved and not solved'
  assert easy['holds'] and '>= 0.99' in easy['criterion'] and '< 0.99' in hard['criterion']


def test_claim_texts_follow_the_config_that_ran():
  c = quick(**{'model.activation': 'relu'})
  acc = {(t, w): [1.0] * 4 for t in ('corner', 'stripes') for w in (2, 10)}
  texts = ' '.join(f'{v["claim"]} {v["setting"]}' for v in verdicts(c, acc).values())
  assert 'relu' in texts and 'tanh' not in texts and 'corner' in texts and 'stripes' in texts


def test_every_width_where_accuracy_falls_is_reported():
  c = quick(**{'model.hidden_units': (1, 2, 10)})
  acc = {('corner', 1): [0.9] * 4, ('corner', 2): [0.95] * 4, ('corner', 10): [1.0] * 4,
         ('stripes', 1): [0.79] * 4, ('stripes', 2): [0.75] * 4, ('stripes', 10): [1.0] * 4}
  more = next(v for k, v in verdicts(c, acc).items() if k.startswith('more hidden units'))
  assert 'not monotone: stripes 1 -> 2 units (0.790 -> 0.750)' in more['measured']
  assert 'corner 1 -> 2' not in more['measured']


@pytest.mark.parametrize('per_model', [False, True])
def test_results_md_says_what_the_seeds_vary(per_model):
  c = quick(**{'data.seed_per_model': per_model})
  acc = {(t, w): [0.8, 0.9, 1.0, 1.0] for t in ('corner', 'stripes') for w in (2, 10)}
  recs = records(c, acc)
  results = {'records': recs, 'claims': report.claims(recs, c, {}), 'figures': [], 'devices': ['cpu:0'],
             'num_models': len(recs), 'train_time_s': 1.0, 'wall_time_s': 2.0}
  md = report.markdown(c, results)
  assert '| corner | 1 | 0.800 - 1.000 | 0.800 - 1.000 |' in md
  assert ('the data set itself' in md) == per_model
