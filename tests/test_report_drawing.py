"""Figures drawn from numbers, here or by worker processes (experiments/reports/drawing.py): the same bytes either
way, a worker's error raised where the report waits, and drawing workers that import no JAX."""
import os
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
