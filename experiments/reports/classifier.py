"""The classifier trainer's report: results.md with its tables, the learning curves, the confusion matrix, and
the lines printed at the end of training and evaluation. Nothing here trains or evaluates: `render` reads a
workdir's results.json, metrics.jsonl and eval.json (where eval.py wrote one)."""
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from trainnets import files
from trainnets.training import workdir as workdir_lib

EVAL_HEADING = '## Evaluation (eval.py)'
# The figures of a run a sweep can summarise (experiments/sweep.py --metric), and its default.
SWEEP_METRICS = ('test_accuracy', 'test_loss', 'top1_error', 'top5_error', 'centre_crop_top1_error',
                 'centre_crop_top5_error', 'final_loss', 'wall_time_s')


def sweep_metric(config):
  """The default --metric: the held-out validation accuracy, which choices between settings should read (the
  test accuracy where the config holds nothing out)."""
  return 'validation_accuracy' if config.data.num_validation else 'test_accuracy'


def sweep_metrics(config):
  """The names sweep_figures gives for runs of `config` (known before any run)."""
  return (('validation_accuracy', 'validation_loss') if config.data.num_validation else ()) + SWEEP_METRICS


def sweep_figures(results):
  """{name: value} of one run's results.json for a sweep's table: its numbers and strings (params_sha256, ...)."""
  return {k: v for k, v in results.items() if isinstance(v, (int, float, str)) and k != 'experiment'}


def render(config, workdir):
  """Writes results.md and the figures of a finished workdir (the learning curves; the confusion matrix and the
  evaluation section where eval.py has run); returns results.json."""
  results = workdir_lib.read_json(os.path.join(workdir, 'results.json'))
  rows = workdir_lib.read_jsonl(os.path.join(workdir, workdir_lib.METRICS_FILE))[1]
  learning_curves(rows, os.path.join(workdir, 'figures', 'learning_curves.png'))
  md = markdown(config, results)
  if os.path.exists(os.path.join(workdir, 'eval.json')):
    out = workdir_lib.read_json(os.path.join(workdir, 'eval.json'))
    if 'confusion' in out:
      confusion_figure(np.asarray(out['confusion']), out['class_names'],
                       os.path.join(workdir, 'figures', 'confusion_matrix.png'),
                       f'{config.experiment}, step {out["step"]}: test accuracy {out["test_accuracy"]:.4f}')
    md = md.rstrip() + '\n\n' + evaluation_markdown(config, out)
  workdir_lib.write_text(os.path.join(workdir, 'results.md'), md)
  return results


def summary(results):
  held = (f'validation accuracy {results["validation_accuracy"]:.4f}; ' if 'validation_accuracy' in results else '')
  return (f'{held}test accuracy {results["test_accuracy"]:.4f}, test loss {results["test_loss"]:.4f} after '
          f'{results["steps"]} steps ({results["wall_time_s"]} s)')


def evaluation_summary(out):
  views = (f'{out["crops"]} crop{"s" if out["crops"] > 1 else ""}, {out["models"]} '
           f'model{"s" if out["models"] > 1 else ""}')
  lines = [f'step {out["step"]} ({views}): test accuracy {out["test_accuracy"]:.4f}, test loss '
           f'{out["test_loss"]:.4f}, top-1 error {out["top1_error"]:.4f}, top-5 error {out["top5_error"]:.4f}']
  lines += [f'  {name:12s} {acc:.4f}' for name, acc in out.get('per_class_accuracy', {}).items()]
  return '\n'.join(lines)


def markdown(config, results):
  lines = [f'# {config.experiment}: results', '',
           f'Command: `{results.get("command", "(not recorded)")}`  ',
           f'Machine: {results.get("machine", "(not recorded)")}  ',
           f'Devices: {", ".join(results["devices"])}'
           + f' (kernels: {", ".join(results["kernels"]) or "none"})'
           + f'; {results["steps"]} steps in {results["wall_time_s"]} s.', '',
           splits_said(config, results), '',
           '| test accuracy | test loss | final training loss | parameters | params sha256 |', '|---|---|---|---|---|',
           f'| {results["test_accuracy"]:.4f} | {results["test_loss"]:.4f} | {results["final_loss"]:.4f} | '
           f'{results["num_params"]:,} | `{results["params_sha256"][:16]}` |', '']
  split = results.get('per_epoch_split', 'test')
  lines += [f'| epoch | step | {split} accuracy | {split} loss |', '|---|---|---|---|']
  lines += [f'| {h["epoch"]} | {h["step"]} | {h[f"{split}_accuracy"]:.4f} | {h[f"{split}_loss"]:.4f} |'
            for h in results['per_epoch']]
  lines += ['', '![learning curves](figures/learning_curves.png)']
  if config.reference:
    lines += ['', f'Final evaluation ({results["eval_crops"]} crop{"s" if results["eval_crops"] > 1 else ""}): '
              f'top-1 error {results["top1_error"]:.4f}, top-5 error {results["top5_error"]:.4f}.', '',
              *reference_rows(config, 'this run, 1 model', results['top1_error'], results['top5_error'])]
  return '\n'.join(lines) + '\n'


def splits_said(config, results):
  """One sentence: which split each number of results.md comes from."""
  if results.get('per_epoch_split', 'test') == 'validation':
    return (f'Every epoch was evaluated on {results["num_validation"]:,} training examples held out for validation '
            f'(`data.num_validation`; never trained on); the test split was evaluated once, at the end: the test '
            f'numbers below are that evaluation, the per-epoch table is validation.')
  return ('Every epoch was evaluated on the test split (`data.num_validation=0`): the test numbers below are the '
          'last epoch\'s, and were seen during training.')


def reference_rows(config, label, top1, top5):
  """A table of the measured errors beside the published ones in config.reference ({row: (top1, top5)})."""
  rows = ['| | top-1 error | top-5 error |', '|---|---|---|', f'| **{label}** | **{top1:.4f}** | **{top5:.4f}** |']
  for name, (r1, r5) in config.reference.items():
    rows.append(f'| {name.replace("_", " ")} (published) | {r1:.3f} | {r5:.3f} |')
  return rows


def evaluation_markdown(config, out):
  label = (f'step {out["step"]}, {out["models"]} model{"s" if out["models"] > 1 else ""}, {out["crops"]} '
           f'crop{"s" if out["crops"] > 1 else ""}')
  lines = [EVAL_HEADING, '', *reference_rows(config, label, out['top1_error'], out['top5_error'])]
  if out['ensemble']:
    lines += ['', 'Ensemble members besides this workdir: ' + ', '.join(f'`{d}`' for d in out['ensemble'])]
  return '\n'.join(lines) + '\n'


def learning_curves(rows, out_path):
  """Training loss against step and test accuracy against step, from the rows of metrics.jsonl."""
  train = [(r['step'], r['train_loss']) for r in rows if 'train_loss' in r]
  split = 'validation' if any('validation_accuracy' in r for r in rows) else 'test'
  test = [(r['step'], r[f'{split}_accuracy']) for r in rows if f'{split}_accuracy' in r]
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
  if train:
    a.plot(*zip(*train))
  a.set(xlabel='step', ylabel='training loss', yscale='log', title='training loss')
  if test:
    b.plot(*zip(*test), marker='o')
  b.set(xlabel='step', ylabel=f'{split} accuracy', title=f'{split} accuracy (per epoch)')
  files.write_figure(out_path, fig, dpi=110, bbox_inches='tight')
  plt.close(fig)


def confusion_figure(confusion, names, out_path, title):
  fig, ax = plt.subplots(figsize=(7, 6))
  rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for i, j in np.ndindex(confusion.shape):
    ax.text(j, i, str(confusion[i, j]), ha='center', va='center', fontsize=7,
            color='white' if rates[i, j] > 0.5 else 'black')
  ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel='predicted', ylabel='true', title=title)
  ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
  ax.set_yticklabels(names, fontsize=8)
  files.write_figure(out_path, fig, dpi=110, bbox_inches='tight')
  plt.close(fig)
