"""trainnets/training/workdir.py's config matching: a workdir trained before a key was added (model.kernels) or retired
(model.group_impl, model.space_to_depth) still matches the config that reproduces it; keys that say how or where
a run runs may change, the others only with --extend."""
import json
import os

import pytest

from trainnets.errors import WorkdirError
from trainnets.training import cli
from trainnets.training import workdir as workdir_lib


@pytest.mark.parametrize('config', ['experiments/fashion_mnist.py:cnn', 'experiments/alexnet_imagenet.py'])
def test_a_workdir_from_before_model_kernels_still_matches(tmp_path, config):
  resolved = cli.load_config(config)
  old = workdir_lib.config_to_dict(resolved)
  del old['model']['kernels']
  if 'alexnet' in config:
    old['model'].update(group_impl='split', space_to_depth=True)
  (tmp_path / 'config.json').write_text(json.dumps(old))
  workdir_lib.check_matches(str(tmp_path), resolved)
  if 'alexnet' in config:  # another value of a retired key is another run
    old['model']['group_impl'] = 'xla'
    (tmp_path / 'config.json').write_text(json.dumps(old))
    with pytest.raises(WorkdirError, match="model.group_impl: 'xla' -> None"):
      workdir_lib.check_matches(str(tmp_path), resolved)
  # the kernels say how it computes, not what: another choice resumes, as a recorded change
  old['model'].pop('group_impl', None)
  (tmp_path / 'config.json').write_text(json.dumps(old))
  changes = workdir_lib.check_matches(str(tmp_path), cli.load_config(config, {'model.kernels': 'none'}))
  assert ('model.kernels', 'auto', 'none') in changes


OLD = os.path.join(os.path.dirname(__file__), 'data')  # config.json files as train.py wrote them on 2026-12-05


@pytest.mark.parametrize('name,spec,overrides,differs', [
    ('hidden_units', 'experiments/hidden_units.py', {}, None),
    ('fashion_mnist_cnn', 'experiments/fashion_mnist.py:cnn', {'data.num_validation': 0},
     'data.num_validation: 0 -> 10000'),
    ('fashion_mnist_mlp', 'experiments/fashion_mnist.py:mlp', {'data.num_validation': 0},
     'data.num_validation: 0 -> 10000'),
    ('alexnet_imagenet_torchvision', 'experiments/alexnet_imagenet.py:torchvision',
     {'train.weight_decay_on': 'all', 'data.pca': 'published', 'data.augment_on': 'host', 'data.num_validation': 0,
      'data.crop_positions': 33, 'train.momentum_form': 'trace'},
     "data.augment_on: 'host' -> 'device', data.crop_positions: 33 -> 32, data.num_validation: 0 -> 10000 and "),
    ('alexnet_imagenet', 'experiments/alexnet_imagenet.py',
     {'train.weight_decay_on': 'all', 'model.lrn_within_towers': False, 'data.pca': 'published',
      'data.augment_on': 'host', 'data.num_validation': 0, 'data.crop_positions': 33,
      'model.dropout_scaling': 'inverted', 'train.momentum_form': 'trace'},
     "data.augment_on: 'host' -> 'device', data.crop_positions: 33 -> 32, data.num_validation: 0 -> 10000 and "),
])
def test_workdirs_trained_before_the_shared_defaults_still_match(tmp_path, name, spec, overrides, differs):
  """Keys added since (the classifier defaults, progress and profiling, weight_decay_on, lrn_within_towers, the
  validation split, the paper's dropout scaling, momentum form and crop offsets) take the value that reproduces
  the old run; where the new default computes something else (the validation split; AlexNet's weight decay,
  normalisation, dropout, momentum and crops), the workdir matches only the config that reproduces it, and
  otherwise gets one line."""
  with open(os.path.join(OLD, f'config_{name}_2026-12-05.json')) as f:
    old = json.load(f)
  (tmp_path / 'config.json').write_text(json.dumps(old))
  data = {'data.tfds_dir': old['data']['tfds_dir']} if 'tfds_dir' in old['data'] else {}
  workdir_lib.check_matches(str(tmp_path), cli.load_config(spec, {**data, **overrides}))
  if differs:
    with pytest.raises(WorkdirError, match=differs):
      workdir_lib.check_matches(str(tmp_path), cli.load_config(spec, data))


def test_a_new_key_is_one_line_and_its_older_value_is_stated_beside_it(tmp_path):
  """A key an older workdir lacks runs as the config file's default unless its definition states another value
  (config_keys.before): the default's run matches, an override does not; a stated value wins over the default."""
  resolved = cli.load_config('experiments/fashion_mnist.py:cnn')
  old = workdir_lib.config_to_dict(resolved)
  del old['train']['plateau_patience']  # no before(): older runs ran as the default
  del old['data']['num_validation']  # before(c, 'data.num_validation', 0)
  old['data']['num_validation_was_here'] = 1  # a key neither in the config nor retired
  (tmp_path / 'config.json').write_text(json.dumps(old))
  with pytest.raises(WorkdirError, match=r'data.num_validation: 0 -> 10000, data.num_validation_was_here: 1 -> None\)'):
    workdir_lib.check_matches(str(tmp_path), resolved)
  del old['data']['num_validation_was_here']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  workdir_lib.check_matches(str(tmp_path), cli.load_config('experiments/fashion_mnist.py:cnn',
                                                           {'data.num_validation': 0}))
  with pytest.raises(WorkdirError, match='train.plateau_patience: 5 -> 7'):
    workdir_lib.check_matches(str(tmp_path), cli.load_config('experiments/fashion_mnist.py:cnn',
                                                             {'data.num_validation': 0, 'train.plateau_patience': 7}))


def test_a_misstated_older_value_fails_where_the_config_is_built():
  import ml_collections  # noqa: PLC0415

  from trainnets import config_keys  # noqa: PLC0415

  c = ml_collections.ConfigDict({'data': {'num_validation': 10}})
  with pytest.raises(KeyError, match='data.num_validaton is not a key'):
    config_keys.before(c, 'data.num_validaton', 0)
  with pytest.raises(ValueError, match='two values'):
    config_keys.before(c, 'data.num_validation', 5)  # defaults.py states 0
  with pytest.raises(KeyError, match='still a key'):
    config_keys.retired(c, 'data.num_validation', 0)


def test_keys_that_say_how_or_where_may_change_and_others_need_extend(tmp_path):
  """Paths, kernels, logging and evaluation options (config_keys.how) may differ from the workdir's; a key that
  defines the run (train.epochs) is refused unless extended, and the refusal says how to extend."""
  spec = 'experiments/fashion_mnist.py:cnn'
  (tmp_path / 'config.json').write_text(json.dumps(workdir_lib.config_to_dict(cli.load_config(spec))))
  moved = cli.load_config(spec, {'data.tfds_dir': '/elsewhere', 'model.kernels': 'none', 'eval.crops': 1,
                                 'train.eval_batch_size': 100, 'train.profile_steps': '3,4'})
  changes = workdir_lib.check_matches(str(tmp_path), moved)
  assert [k for k, _, _ in changes] == ['data.tfds_dir', 'model.kernels', 'train.eval_batch_size',
                                        'train.profile_steps']
  epochs = cli.load_config(spec).train.epochs
  longer = cli.load_config(spec, {'train.epochs': epochs + 5})
  with pytest.raises(WorkdirError, match=rf'train.epochs: {epochs} -> {epochs + 5}\); .*or pass --extend to continue'):
    workdir_lib.check_matches(str(tmp_path), longer)
  assert workdir_lib.check_matches(str(tmp_path), longer, extend=True) == [('train.epochs', epochs, epochs + 5)]


def test_a_resumed_run_records_each_change_and_the_new_config(tmp_path):
  spec = 'experiments/hidden_units.py:quick'
  workdir_lib.prepare(str(tmp_path), cli.load_config(spec))
  workdir_lib.prepare(str(tmp_path), cli.load_config(spec, {'train.progress_every_s': 5}), at_step=0)
  _, rows = workdir_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert rows[-1]['config_changed'] == {'train.progress_every_s': {'from': 30.0, 'to': 5.0}} and not rows[-1]['extend']
  assert json.loads((tmp_path / 'config.json').read_text())['train']['progress_every_s'] == 5.0
