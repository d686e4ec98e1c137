"""The hidden-units claims as data: one criterion for solved and not solved, texts and settings that follow the
config, the lecture's claims read on the runs it speaks of, trends judged with their dips. On synthetic records, so
each verdict is known in advance."""
import numpy as np
import pytest

from experiments import claims as claims_lib
from experiments import hidden_units as config_lib
from experiments import hidden_units_claims
from experiments.reports import hidden_units as report


def records(config, accuracy, at_epoch=None):
  """Records of depth-1 nets: accuracy[(task, width)] is the list of per-seed final training accuracies;
  at_epoch[(task, width)] the accuracies at claims.at_epoch (default: the final ones)."""
  at = config.claims.at_epoch
  out = []
  for (task, width), accs in accuracy.items():
    early = (at_epoch or {}).get((task, width), accs)
    for seed, (a, e) in enumerate(zip(accs, early)):
      out.append({'task': task, 'hidden_units': width, 'depth': 1, 'init': config.model.weight_init, 'seed': seed,
                  'epochs': config.train.epochs, 'solved': a == 1.0, 'train_accuracy': a, 'test_accuracy': a,
                  f'train_accuracy_epoch{at}': e, 'weights_moved': 1.0, 'num_params': 4 * width + 1})
  return out


def quick(**overrides):
  c = config_lib.get_config('quick')
  c.claims.zero_init = False
  c.model.include_linear = False  # the records below are of depth-1 nets only
  for k, v in overrides.items():
    section, key = k.split('.')
    c[section][key] = v
  return c


def verdicts(config, accuracy, at_epoch=None):
  return {c['id']: c for c in claims_lib.verdicts(hidden_units_claims.CLAIMS, records(config, accuracy, at_epoch),
                                                  config)}


def test_solved_and_not_solved_are_one_criterion_read_both_ways():
  """The same records, read as the easy and as the hard task, can never be both solved and not solved: median
  0.995 with no seed at zero loss was 'solved' and 'can no longer solve' at once under the old two criteria."""
  c = quick(**{'claims.easy_task': 'stripes', 'claims.hard_task': 'stripes', 'claims.at_epoch': 12})
  almost = [0.995, 0.995, 0.99, 1.0 - 1e-3]
  acc = {('stripes', 2): almost, ('stripes', 10): [1.0] * 4, ('corner', 2): [0.9] * 4, ('corner', 10): [1.0] * 4}
  out = verdicts(c, acc)
  easy, hard = out['easy_few_units'], out['hard_few_units']
  assert 'solve stripes' in easy['claim'] and 'does not find' in hard['claim']
  assert easy['holds'] != hard['holds'], 'one setting cannot be solved and not solved'
  assert easy['holds'] and easy['criterion'].endswith('>= 0.99') and hard['criterion'].endswith('< 0.99')


def test_ten_units_are_read_on_the_hard_task_at_about_ten_epochs():
  """The lecture's 10-unit claim is about the task 2 units cannot solve, after ~10 epochs: on records where 10
  units fit stripes only at the end, it fails, whatever they do on corner."""
  c = quick()
  acc = {(t, w): [1.0] * 4 for t in ('corner', 'stripes') for w in (2, 10)}
  late = verdicts(c, acc, at_epoch={('stripes', 10): [0.8] * 4})['hard_many_units']
  assert late['select'] == {'task': 'stripes', 'depth': 1, 'hidden_units': 10}
  assert not late['holds'] and late['value'] == pytest.approx(0.8) and 'at epoch 10' in late['criterion']
  assert 'After ~10 epochs' in late['quote']
  assert verdicts(c, acc, at_epoch={('corner', 10): [0.5] * 4})['hard_many_units']['holds']


def test_claim_texts_and_settings_follow_the_config_that_ran():
  c = quick(**{'model.activation': 'relu', 'model.offset_init': 'normal', 'train.batch_size': 8})
  acc = {(t, w): [1.0] * 4 for t in ('corner', 'stripes') for w in (2, 10)}
  out = verdicts(c, acc)
  texts = ' '.join(v['claim'] for v in out.values())
  assert 'relu' in texts and 'tanh' not in texts and 'corner' in texts and 'stripes' in texts
  setting = report.run_setting(c)
  assert 'N(0, 0.1^2) offsets' in setting and 'batches of 8' in setting and 'zero offsets' not in setting
  assert 'per-example' not in setting
  assert 'zero offsets' in report.run_setting(quick()) and 'per-example SGD' in report.run_setting(quick())


def test_a_trend_counts_every_dip_against_it():
  """'More units fit more easily' is Kendall's tau of width against the median accuracy at every task and depth:
  one fall among rises lowers it, a plateau below 1 gives 0 (no rise) and fails, a plateau at 1 is left out."""
  c = quick(**{'model.hidden_units': (1, 2, 10)})
  early = {('corner', 1): [0.9] * 4, ('corner', 2): [0.95] * 4, ('corner', 10): [1.0] * 4,
           ('stripes', 1): [0.79] * 4, ('stripes', 2): [0.75] * 4, ('stripes', 10): [1.0] * 4}
  final = {k: [1.0] * 4 for k in early}
  out = verdicts(c, final, at_epoch=early)
  easily = out['more_units_fit_more_easily']
  assert easily['value'] == pytest.approx(1 / 3), 'stripes: 2 pairs rise, 1 falls'
  assert easily['holds'] and 'depth 1 stripes 1 -> 2 units (0.790 -> 0.750)' in easily['measured']
  assert 'corner 1 -> 2' not in easily['measured']
  assert 'all 1.000' in out['more_units_more_powerful']['measured'] and out['more_units_more_powerful']['holds']
  flat = {k: [0.6] * 4 for k in early}
  assert not verdicts(c, final, at_epoch=flat)['more_units_fit_more_easily']['holds']
  falling = {**early, ('stripes', 10): [0.7] * 4}
  assert not verdicts(c, final, at_epoch=falling)['more_units_fit_more_easily']['holds']


def test_kendall():
  assert claims_lib.OPS['>'](hidden_units_claims.kendall([1, 2, 3], [0.1, 0.2, 0.3]), 0.99)
  assert hidden_units_claims.kendall([1, 2, 3], [0.3, 0.2, 0.1]) == -1.0
  assert hidden_units_claims.kendall([1, 2], [0.5, 0.5]) is None


def test_parameter_growth_is_judged_over_every_width_and_depth():
  """The count of a depth-d net is (d-1)m^2 + (d+3)m + 1: the fit recovers it from the records, the m^2 term is
  most of the count at the widest width from depth 2, and depth 1 is said to be linear."""
  c = config_lib.get_config()
  recs = [{'task': 'corner', 'hidden_units': m, 'depth': d, 'init': 'lecture', 'num_params': (d - 1) * m * m +
           (d + 3) * m + 1} for d in (1, 2, 3) for m in c.model.hidden_units]
  claim = next(x for x in hidden_units_claims.CLAIMS if x.id == 'parameters_grow_quadratically')
  v = claim.verdict(recs, c)
  assert v['holds'] and v['value'] == pytest.approx(1024 / 1185)
  assert 'depth 3: 9 -> 2241 = 2m^2 + 6m + 1' in v['measured'] and 'depth 1 the count is linear' in v['measured']
  assert not claim.applies(quick()), 'one depth and two widths cannot show quadratic growth'


def test_sweep_names_are_the_claims_ids():
  c = quick()
  names = report.sweep_metrics(c)
  ids = claims_lib.made_by(hidden_units_claims.CLAIMS, c)
  assert [n for n in names if n.startswith('claim_')] == [f'claim_{i}' for i in ids]
  assert 'parameters_grow_quadratically' not in ids and 'single_layer_linear' not in ids
  acc = {(t, w): [1.0] * 4 for t in ('corner', 'stripes') for w in (2, 10)}
  recs = records(c, acc)
  res = {'records': recs, 'claims': claims_lib.verdicts(hidden_units_claims.CLAIMS, recs, c), 'num_models': 16,
         'train_time_s': 1.0, 'wall_time_s': 2.0}
  figures = report.sweep_figures(res)
  assert set(figures) == set(names)
  assert figures['claims_holding'] == sum(v['holds'] for v in res['claims']) and np.isfinite(figures['claims_holding'])


@pytest.mark.parametrize('per_model', [False, True])
def test_results_md_says_what_the_seeds_vary(per_model):
  c = quick(**{'data.seed_per_model': per_model})
  acc = {(t, w): [0.8, 0.9, 1.0, 1.0] for t in ('corner', 'stripes') for w in (2, 10)}
  recs = records(c, acc)
  results = {'records': recs, 'claims': claims_lib.verdicts(hidden_units_claims.CLAIMS, recs, c), 'figures': [],
             'devices': ['cpu:0'], 'num_models': len(recs), 'train_time_s': 1.0, 'wall_time_s': 2.0}
  md = report.markdown(c, results)
  assert '| corner | 1 | 0.800 - 1.000 | 0.800 - 1.000 |' in md
  assert ('the data set itself' in md) == per_model


def test_a_sweep_reads_older_runs_claims_as_the_code_derives_them_now():
  """Claims are a pure function of (config, records): a results.json written before claims had ids (or under
  older definitions) is summarised with today's claims, not a KeyError."""
  c = quick()
  recs = records(c, {(t, w): [1.0] * 4 for t in ('corner', 'stripes') for w in (2, 10)})
  old = {'records': recs, 'claims': [{'claim': 'an old wording', 'holds': True}], 'num_models': 16,
         'train_time_s': 1.0, 'wall_time_s': 2.0}
  figures = report.sweep_figures(report.current(old, c))
  assert [n for n in figures if n.startswith('claim_')] == [f'claim_{i}' for i in
                                                            claims_lib.made_by(hidden_units_claims.CLAIMS, c)]


def test_select_keeps_the_records_order_and_never_serves_another_lists_index():
  records = [{'task': t, 'seed': s} for s in range(3) for t in ('corner', 'xor')]
  assert claims_lib.select(records, task='xor') == [records[1], records[3], records[5]]
  assert claims_lib.select(records, task='xor', seed=2) == [records[5]]
  assert claims_lib.select(records, task='spiral') == []
  other = [dict(r, task='xor') for r in records]  # same fields, another list: indexed afresh
  assert claims_lib.select(other, task='xor') == other
  picked = claims_lib.select(records, seed=0)
  picked.clear()  # a caller's list is its own
  assert claims_lib.select(records, seed=0) == records[:2]
