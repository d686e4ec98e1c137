"""training/workdir.py's config matching across versions of the config: a workdir trained before a key was added
(model.kernels) or retired (model.group_impl, model.space_to_depth) still matches the config that reproduces it."""
import json

import pytest

from errors import WorkdirError
from training import cli
from training import workdir as workdir_lib


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
  with pytest.raises(WorkdirError, match="model.kernels: 'auto' -> 'none'"):
    workdir_lib.check_matches(str(tmp_path), cli.load_config(config, {'model.kernels': 'none'}))
