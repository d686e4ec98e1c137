"""Finding a project module by the name a config gives (model.name, trainer): one rule for every package.

Imports nothing of the project but trainnets/errors.py, so every layer may use it.
"""
import importlib
import pkgutil

from trainnets.errors import ConfigError


def module(package, name, required, key):
  """The module <package>.<name> that defines every attribute in `required`; else a ConfigError naming `key` and
  listing the package's modules that would do."""
  fits = lambda m: all(hasattr(m, a) for a in required)
  if isinstance(name, str) and name.isidentifier():
    try:
      found = importlib.import_module(f'{package}.{name}')
    except ModuleNotFoundError as e:
      if e.name != f'{package}.{name}':
        raise
      found = None
    if found is not None and fits(found):
      return found
  path = importlib.import_module(package).__path__
  names = sorted(m.name for m in pkgutil.iter_modules(path) if fits(importlib.import_module(f'{package}.{m.name}')))
  where = package.replace('.', '/')
  raise ConfigError(f'{key} {name!r} is unknown; choose one of {", ".join(names)} (modules of {where}/)')
