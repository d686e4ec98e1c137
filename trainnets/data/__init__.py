"""Datasets: the 2-D toy tasks generated in code (toy2d), and image datasets through TFDS for the classifier.

A dataset for the classifier trainer is a module here that defines NAME (its config.data.name, TFDS's name for
it) and Dataset(data_cfg) with image_shape, num_classes, class_names, num_train, num_validation, num_test,
train_batches and eval_batches(split) for split 'validation' (training examples held out, data.num_validation)
and 'test'; optionally verify(splits), which checks what those splits will read before the trainer writes. A new
dataset is a new module here and a config naming it.
"""
import functools
import importlib
import pkgutil

from trainnets.errors import ConfigError


@functools.cache
def _datasets():
  """{NAME: module} of the modules here that define a classifier's Dataset."""
  out = {}
  for m in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f'{__name__}.{m.name}')
    if hasattr(module, 'NAME') and hasattr(module, 'Dataset'):
      out[module.NAME] = module
  return out


def module(name):
  """The module of trainnets/data/ whose NAME is `name`; a ConfigError listing the datasets if there is none."""
  found = _datasets()
  if name not in found:
    raise ConfigError(f'data.name {name!r} is unknown; choose one of {", ".join(sorted(found))} (NAME of a module '
                      'of trainnets/data/)')
  return found[name]
