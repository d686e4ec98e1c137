"""The hidden-units report's figures, drawn from numbers alone: numpy and matplotlib, no JAX.

experiments/reports/hidden_units.py computes everything a figure shows (each net's decision map on a grid, the
training points, the hidden units' lines, accuracies and curves) and names one function here per figure,
`function(path, **numbers)`, which draws it and writes the PNG. The numbers are plain arrays, so the figures can be
drawn in worker processes that import nothing but this (experiments/reports/drawing.py) while the report goes on.
"""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from trainnets import files


def _save(fig, path):
  files.write_figure(path, fig, dpi=110, bbox_inches='tight')
  plt.close(fig)


def _panel(ax, g, z, x, y, title, lines=None):
  """One net on the square: its decision regions (scores z on the grid g x g) and boundary, its first hidden layer's
  lines (W [2, units], W0 [units]) dashed, and the training points (x, y)."""
  gx, gy = np.meshgrid(g, g)
  ax.contourf(gx, gy, z > 0, levels=[-0.5, 0.5, 1.5], colors=['#f4c7c3', '#c6dbef'], alpha=0.8)
  if z.min() < 0 < z.max():
    ax.contour(gx, gy, z, levels=[0.0], colors='k', linewidths=1.5)
  if lines is not None:
    W, W0 = lines
    for j in range(W.shape[1]):  # hidden unit j's line z_j = W[0, j] x1 + W[1, j] x2 + W0[j] = 0
      w1, w2, b = W[0, j], W[1, j], W0[j]
      if abs(w2) > abs(w1):
        ax.plot(g, -(w1 * g + b) / w2, '--', color='0.35', lw=0.8)
      elif abs(w1) > 0:
        ax.plot(-(w2 * g + b) / w1, g, '--', color='0.35', lw=0.8)
  ax.scatter(x[y > 0, 0], x[y > 0, 1], s=9, c='#08519c', marker='+', lw=0.8)
  ax.scatter(x[y < 0, 0], x[y < 0, 1], s=7, c='#a50f15', marker='_', lw=0.8)
  ax.set(xlim=(g[0], g[-1]), ylim=(g[0], g[-1]), xticks=[], yticks=[], aspect='equal')
  ax.set_title(title, fontsize=9)


def boundaries(path, grid, panels, title, figsize, title_y=None, tight_layout=False):
  """A grid of nets' decision maps on grid x grid: panels[row][col] holds _panel's other arguments."""
  fig, axes = plt.subplots(len(panels), len(panels[0]), figsize=figsize, squeeze=False)
  for row, cells in enumerate(panels):
    for col, cell in enumerate(cells):
      _panel(axes[row, col], grid, **cell)
  fig.suptitle(title, **({} if title_y is None else {'y': title_y}))
  if tight_layout:
    fig.tight_layout()
  _save(fig, path)


def _band(ax, x, values_SxX, label, **style):
  med = np.median(values_SxX, axis=0)
  lo, hi = np.percentile(values_SxX, [25, 75], axis=0)
  (line,) = ax.plot(x, med, label=label, **style)
  ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def accuracy_vs_units(path, widths, tasks, num_seeds):
  """Final training accuracy against hidden units per task: tasks is [(task, [(label, accuracy [seeds, widths])]
  per depth, the linear net's median or None)]."""
  fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), squeeze=False)
  for ax, (task, depths, linear) in zip(axes[0], tasks):
    for label, acc in depths:
      _band(ax, widths, acc, label, marker='o', ms=3)
    if linear is not None:
      ax.axhline(linear, color='0.4', ls=':', label='linear')
    ax.set(xscale='log', xticks=widths, xticklabels=[str(w) for w in widths], xlabel='hidden units per layer',
           ylim=(0.45, 1.02), title=task)
    ax.tick_params(axis='x', labelsize=7)
  axes[0, 0].set_ylabel('final training accuracy')
  axes[0, -1].legend(fontsize=8, loc='lower right')
  fig.suptitle(f'Accuracy vs hidden units: median and 25-75% over {num_seeds} seeds', y=1.03)
  _save(fig, path)


def training_curves(path, epochs, at, tasks, num_seeds):
  """Training accuracy per epoch: tasks is [(task, [(label, curves [seeds, epochs + 1], line style)])]."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, (task, bands) in zip(axes, tasks):
    for label, curves, ls in bands:
      _band(ax, np.arange(epochs + 1), curves, label, ls=ls)
    ax.axvline(at, color='0.6', lw=0.8)
    ax.set(xlabel='epoch', ylabel='training accuracy', title=task, ylim=(0.45, 1.02))
    ax.legend(fontsize=8, loc='lower right')
  fig.suptitle(f'Training curves: median and 25-75% over {num_seeds} seeds (zero-init lines coincide)', y=1.02)
  _save(fig, path)
