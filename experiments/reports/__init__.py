"""What turns a trainer's results into tables, figures and terminal lines: one module per trainer, of its name.

The entry points hand the module to the trainer (trainnets/training/__init__.py), which calls
  analyse(config, workdir, results, **artefacts) -> results   figures written, anything derived added
  markdown(config, results) -> str                              results.md
  summary(results) -> str                                       the lines printed at the end of training
  evaluation_summary(out) -> str                                the lines eval.py prints
and, for checkpointed trainers, analyse_evaluation / evaluation_markdown / EVAL_HEADING for eval.py's section of
results.md. For the sweep launcher: sweep_metrics(config) (the figures a run will offer, checked before any run),
sweep_figures(results), sweep_metric(config) (the default --metric) and optionally sweep_markdown (more of sweep.md)
and current(results, config) (what a sweep derives again from a run's records before it summarises it). A report
whose figures are drawn from numbers alone may hand them over: FIGURES (the module that draws them, numpy and
matplotlib only) and start_render(config, workdir, draw, trained), with which experiments/report.py has them drawn by
worker processes (drawing.py) while the report, and the next run's, go on (`trained`: the run as its trainer holds it
in memory, handed over before its files are written).
sweep.py summarises a sweep launcher's runs (sweep.csv, sweep.md, figures). Nothing here trains or reads the
data.
"""
