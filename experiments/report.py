"""Renders a finished workdir's results.md and figures from its files, in seconds, without training:

  python -m experiments.report WORKDIR

train.py and eval.py end with the same `render`. Run it by hand to redraw an existing workdir after changing a
report (a table, a figure, a claim's wording): the numbers come from the workdir (results.json, metrics.jsonl,
eval.json, saved parameters), the config from its config.json, and the report module from the config's trainer
(experiments/reports/<trainer>.py).
"""
import concurrent.futures
import multiprocessing
import os
import signal
import sys

import ml_collections

import experiments
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


def render(config, workdir):
  """Writes the workdir's results.md and figures; returns the lines to print."""
  if not os.path.exists(os.path.join(workdir, 'results.json')):
    raise WorkdirError(f'{workdir} has no results.json: its run has not finished; run the same train.py command '
                       'to finish it')
  module = experiments.report_module(config)
  return module.summary(module.render(config, workdir))


def _start_worker():
  """A render_many worker: JAX's CPU set up as train.py's is; Ctrl-C is the parent's to handle."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  from trainnets.training import process  # noqa: PLC0415 (before JAX starts in this process)

  process.prepare_cpu()


def _render_workdir(workdir):
  return render(config_of(workdir), workdir)


def render_many(pairs, workers=None):
  """render() of several finished workdirs [(config, workdir)], up to `workers` at once (default: one per core) in
  fresh processes, each drawing what render() alone draws; returns each one's lines, in order. One workdir, or
  one core, renders here."""
  workers = min(workers or os.cpu_count() or 1, len(pairs))
  if workers <= 1:
    return [render(c, w) for c, w in pairs]
  context = multiprocessing.get_context('spawn')  # not fork: this process's JAX threads do not survive a fork
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
    return list(pool.map(_render_workdir, [w for _, w in pairs]))


def main(argv):
  if len(argv) != 2 or argv[1].startswith('-'):
    print('usage: python -m experiments.report WORKDIR (a workdir that train.py finished)', file=sys.stderr)
    return 2
  try:
    print(render(config_of(argv[1]), argv[1]))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
