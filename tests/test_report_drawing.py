"""Figures drawn from numbers, here or by worker processes (experiments/reports/drawing.py): the same bytes either
way, a worker's error raised where the report waits, and drawing workers that import no JAX."""
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from experiments.reports import drawing
from experiments.reports import hidden_units as report
from experiments.reports import hidden_units_figures as figures
from tests.helpers import ROOT
from trainnets.errors import WriteError


def curves_numbers():
  rng = np.random.default_rng(0)
  return {'epochs': 6, 'at': 3, 'num_seeds': 4,
          'tasks': [(task, [('2 units, lecture init', rng.uniform(0.5, 1, (4, 7)), '-')]) for task in ('a', 'b')]}


def test_a_figure_drawn_by_a_worker_is_the_figure_drawn_here(tmp_path):
  here, there = tmp_path / 'here.png', tmp_path / 'there.png'
  drawing.Here().draw(figures.__name__, 'training_curves', str(here), **curves_numbers())
  with drawing.Pool([figures.__name__], workers=2) as pool:
    done = pool.draw(figures.__name__, 'training_curves', str(there), **curves_numbers())
    assert done.result() is None
  assert here.read_bytes() == there.read_bytes() and here.stat().st_size > 1000


def test_a_workers_error_is_raised_where_the_report_waits(tmp_path):
  blocked = tmp_path / 'file'
  blocked.write_text('a file where the figures directory should be')
  with drawing.Pool([figures.__name__], workers=1) as pool:
    failed = pool.draw(figures.__name__, 'training_curves', str(blocked / 'figures' / 'c.png'), **curves_numbers())
    with pytest.raises(WriteError, match='could not write'):
      failed.result()
  with pytest.raises(WriteError, match='could not write'):
    drawing.Here().draw(figures.__name__, 'training_curves', str(blocked / 'figures' / 'c.png'), **curves_numbers())


def test_a_figure_whose_worker_died_is_drawn_here(tmp_path):
  """A worker killed (out of memory, by hand) breaks the pool: its figures, and those handed over after it, are
  drawn here instead of failing the report."""
  here = tmp_path / 'here.png'
  drawing.Here().draw(figures.__name__, 'training_curves', str(here), **curves_numbers())
  with drawing.Pool([figures.__name__], workers=1) as pool:
    pool.draw(figures.__name__, 'training_curves', str(tmp_path / 'first.png'), **curves_numbers()).result()
    workers = multiprocessing.active_children()
    assert workers
    for worker in workers:
      os.kill(worker.pid, signal.SIGKILL)
    for worker in workers:
      worker.join(10)
    for name in ('second.png', 'third.png'):
      assert pool.draw(figures.__name__, 'training_curves', str(tmp_path / name), **curves_numbers()).result() is None
      assert (tmp_path / name).read_bytes() == here.read_bytes()


SCRIPT = """
import os, sys
with open(sys.argv[1], 'a') as f:  # every process that runs this file as a module says so
  f.write(f'{os.getpid()}\\n')
from experiments.reports import drawing
from tests.test_report_drawing import curves_numbers

if __name__ == '__main__':
  with drawing.Pool(['experiments.reports.hidden_units_figures'], workers=2) as pool:
    drawn = [pool.draw('experiments.reports.hidden_units_figures', 'training_curves', os.path.join(sys.argv[2], f),
                       **curves_numbers()) for f in ('a.png', 'b.png', 'c.png')]
    [d.result() for d in drawn]
"""


def test_workers_do_not_run_the_main_module_again(tmp_path):
  """A worker that ran train.py again would import JAX and the trainer before drawing anything."""
  (tmp_path / 'main.py').write_text(SCRIPT)
  out = subprocess.run([sys.executable, str(tmp_path / 'main.py'), str(tmp_path / 'ran'), str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.returncode == 0, out.stderr[-2000:]
  assert len((tmp_path / 'ran').read_text().split()) == 1, 'only the parent ran main.py'
  assert all((tmp_path / f).stat().st_size > 1000 for f in ('a.png', 'b.png', 'c.png'))


def test_where_no_worker_can_start_the_figures_are_drawn_here(monkeypatch, capsys):
  assert type(drawing.start([figures.__name__], workers=1)) is drawing.Here, 'one core: nothing to gain'

  def no_socket():
    raise OSError('AF_UNIX path too long')

  monkeypatch.setattr(multiprocessing.forkserver, 'ensure_running', no_socket)
  assert type(drawing.start([figures.__name__], workers=2)) is drawing.Here
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'no worker process could start (AF_UNIX path too long)' in err


def imported(module, names):
  code = f'import sys; import {module}; print(sorted(m for m in {names!r} if m in sys.modules))'
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': ROOT})
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip()


def test_what_draws_imports_no_jax_and_what_hands_figures_over_no_matplotlib():
  """Drawing workers import only what draws (a worker that imported JAX would take a second to start), and the
  process that computes a report's numbers leaves matplotlib's import to them."""
  assert imported(figures.__name__, ('jax', 'jaxlib', 'flax')) == '[]'
  assert report.FIGURES == figures.__name__
  assert imported(report.__name__, ('matplotlib',)) == '[]'


def test_a_run_that_fails_leaves_no_worker_socket_behind(tmp_path):
  """cli.fail ends the process with os._exit, which skips multiprocessing's clean-up: the forkserver's socket
  directory (pymp-*) would stay in the temporary directory after every stopped or failed run."""
  code = ('import multiprocessing.util, sys\n'
          'from experiments.reports import drawing\n'
          'from trainnets.training import cli\n'
          'pool = drawing.start(["matplotlib"], 2)\n'
          'print(multiprocessing.util.get_temp_dir(), flush=True)\n'
          'cli.fail("stopped")\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'TMPDIR': str(tmp_path)})
  assert proc.returncode == 2 and 'error: stopped' in proc.stderr, proc.stderr[-2000:]
  made = proc.stdout.split()[-1]
  assert made.startswith(str(tmp_path)) and not os.path.exists(made), os.listdir(tmp_path)
