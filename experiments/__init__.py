"""Experiment configs (`get_config(arg)`, light to import) and, in reports/, what turns results into tables and
figures.

A config's `trainer` names a module of trainnets/training/ (training.trainer); the report of the same name here
(experiments/reports/<trainer>.py) renders a finished workdir's results.md, figures and terminal summary
(experiments/report.py: `python -m experiments.report WORKDIR`). Modules are imported on demand, so a toy
experiment never pays for TensorFlow's import.
"""
import importlib

from trainnets.errors import ConfigError


def parse_arg(arg, file, *, variants=(), options=(), default=None):
  """(variant, options) of a config file's argument, e.g. 'cnn,quick' -> ('cnn', {'quick'}): at most one of
  `variants` (else `default`) and any of `options`, comma-separated. A ValueError, naming the file and what it
  takes, for anything else."""
  args = set(filter(None, (arg or '').split(',')))
  chosen = args & set(variants)
  if args - set(variants) - set(options) or len(chosen) > 1:
    takes = ([f'at most one of {", ".join(variants)}'] if variants else []) + (
        [f'any of {", ".join(options)}'] if options else [])
    raise ValueError(f'argument(s) {",".join(sorted(args))} for {file}: it takes {" and ".join(takes) or "none"}, '
                     'comma-separated (e.g. ' + ','.join([*variants[-1:], *options[:1]]) + ')')
  return (chosen.pop() if chosen else default), args & set(options)


def report_module(config):
  """The module of experiments/reports/ for config.trainer."""
  try:
    return importlib.import_module(f'experiments.reports.{config.trainer}')
  except ModuleNotFoundError as e:
    if e.name != f'experiments.reports.{config.trainer}':
      raise
    raise ConfigError(f'config.trainer {config.trainer!r} has no report module experiments/reports/'
                      f'{config.trainer}.py; add one beside the trainer') from None
