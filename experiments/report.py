"""Renders a finished workdir's results.md and figures from its files, in seconds, without training:

  python -m experiments.report WORKDIR

train.py and eval.py end with the same `render`. Run it by hand to redraw an existing workdir after changing a
report (a table, a figure, a claim's wording): the numbers come from the workdir (results.json, metrics.jsonl,
eval.json, saved parameters), the config from its config.json, and the report module from the config's trainer
(experiments/reports/<trainer>.py).
"""
import functools
import os
import sys

import ml_collections

import experiments
from experiments.reports import drawing as drawing_lib
from trainnets.errors import UserError
from trainnets.errors import WorkdirError
from trainnets.training import workdir as workdir_lib


def config_of(workdir):
  """The config a workdir was trained with (its config.json), as a ConfigDict."""
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise WorkdirError(f'{workdir} has no {workdir_lib.CONFIG_FILE}, so train.py did not write it; pass a workdir '
                       'that train.py finished')
  return ml_collections.ConfigDict(workdir_lib.read_json(path))


def start(config, workdir, draw=None, trained=None):
  """render() up to the figures that `draw` (see drawing()) may still be drawing elsewhere; returns the function
  that waits for them, writes the rest of the report and returns the lines to print. A report that does not hand
  its figures over draws them in that function. `trained`: what the trainer handed over in memory before writing
  the workdir's files (the trainer's `trained` hook), which the report reads instead of them; the function is
  called once they are written."""
  if trained is None and not os.path.exists(os.path.join(workdir, 'results.json')):
    raise WorkdirError(f'{workdir} has no results.json: its run has not finished; run the same train.py command '
                       'to finish it')
  module = experiments.report_module(config)
  if hasattr(module, 'start_render'):
    finish = module.start_render(config, workdir, draw, trained)
  else:
    finish = functools.partial(module.render, config, workdir)
  return lambda: module.summary(finish())


def render(config, workdir, draw=None):
  """Writes the workdir's results.md and figures; returns the lines to print."""
  return start(config, workdir, draw)()


def drawing(config):
  """Where the figures of runs of `config` are drawn: a drawing.Pool of one process per core, started now, where
  its report hands them over (its module's FIGURES names the module that draws them; drawing.start says when
  not); else drawing.Here(). Start it before training, so its imports overlap the work."""
  figures = getattr(experiments.report_module(config), 'FIGURES', None)
  return drawing_lib.Here() if figures is None else drawing_lib.start([figures])


def main(argv):
  if len(argv) != 2 or argv[1].startswith('-'):
    print('usage: python -m experiments.report WORKDIR (a workdir that train.py finished)', file=sys.stderr)
    return 2
  try:
    config = config_of(argv[1])
    with drawing(config) as draw:
      print(render(config, argv[1], draw))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
