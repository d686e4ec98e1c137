"""Supervised training of image classifiers: one sharded, jitted step, verified checkpoints, resumable runs.

`train_and_evaluate(config, workdir)` runs these stages:
  1. mesh       a 1-D 'data' mesh over all devices: parameters replicated, the global batch split across devices.
  2. input      the dataset's tf.data pipelines on the host, prefetched onto the devices.
  3. state      {params, opt_state, step, rng} from the model and optimiser in the config.
  4. step       one jitted update with shardings at its boundary; it donates the old state. Gradients come from
                jax.value_and_grad in the step itself; dropout keys are fold_in(rng, step).
  5. resume     from the workdir's latest checkpoint (verified); otherwise a fresh init from config.seed.
  6. loop       metrics.jsonl and TensorBoard every log_every steps, test evaluation every epoch, checkpoints
                every checkpoint_every steps (asynchronous), a save and a clean exit on SIGTERM, and a stop
                naming the step if the loss is no longer finite (the last good checkpoint stays).
  7. results    results.json, results.md and the learning-curve figure.

A run killed at any moment and started again with the same command ends with bitwise the same parameters as an
uninterrupted run: the step fixes the data position (epoch = step // steps_per_epoch; the epoch's shuffle is
rebuilt from (seed, epoch) and its first batches skipped) and every random key.
"""
import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from data import pipeline  # noqa: E402
from nets import cnn  # noqa: E402
from nets import losses  # noqa: E402
from training import checkpoint as checkpoint_lib  # noqa: E402
from training import metrics as metrics_lib  # noqa: E402
from training import optim  # noqa: E402
from training import sharding  # noqa: E402
from training import workdir as workdir_lib  # noqa: E402
from training.errors import ConfigError  # noqa: E402
from training.errors import UserError  # noqa: E402
from training.errors import WorkdirError  # noqa: E402


class TrainingDiverged(UserError):
  """The loss or the parameters stopped being finite."""


# ------------------------------------------------------------------------------------------------ model, data


def model_for(config):
  """(init(key, image_shape) -> params, apply(params, x, train, key) -> logits) of config.model."""
  if config.model.name == 'cnn':
    arch = cnn.Arch.from_config(config.model)
    problems = arch.validate()
    if problems:
      raise ConfigError(problems[0])
    return (lambda key, shape: cnn.init(key, arch, shape),
            lambda params, x, train=False, key=None: cnn.apply(params, x, arch, train=train, key=key))
  raise ConfigError(f'model.name {config.model.name!r} is unknown; choose cnn')


def dataset_for(config):
  if config.data.name == 'fashion_mnist':
    from data import fashion_mnist  # noqa: PLC0415

    return fashion_mnist.Dataset(config.data)
  raise ConfigError(f'data.name {config.data.name!r} is unknown; choose fashion_mnist')


def validate(config):
  t = config.train
  for key, ok in (('batch_size', t.batch_size >= 1), ('epochs', t.epochs >= 1), ('log_every', t.log_every >= 1),
                  ('checkpoint_every', t.checkpoint_every >= 1), ('keep_checkpoints', t.keep_checkpoints >= 1)):
    if not ok:
      raise ConfigError(f'train.{key} must be >= 1, got {t[key]}')
  for key in ('num_train', 'num_test'):
    if config.data[key] < 0:
      raise ConfigError(f'data.{key} must be >= 0 (0: the whole split), got {config.data[key]}')


# ------------------------------------------------------------------------------------------------------ steps


def make_train_step(apply_fn, tx, mesh):
  """The jitted update: (state, batch) -> (state, metrics), state replicated, batch split over 'data'."""

  def loss_fn(params, batch, key):
    logits = apply_fn(params, batch['image'], train=True, key=key)
    return losses.softmax_cross_entropy(logits, batch['label']).mean(), logits

  def step(state, batch):
    key = jax.random.fold_in(state['rng'], state['step'])
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'], batch, key)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
               'grad_norm': optax.global_norm(grads), 'param_norm': optax.global_norm(params)}
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1, 'rng': state['rng']}, metrics

  rep, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(step, in_shardings=(rep, batch), out_shardings=(rep, rep), donate_argnums=0)


def make_eval_step(apply_fn, mesh, num_classes):
  """The jitted evaluation of one padded batch: sums of loss and correct predictions, and a confusion matrix."""

  def step(params, batch):
    logits = apply_fn(params, batch['image'], train=False)
    mask = batch['mask']
    pred = jnp.argmax(logits, -1)
    confusion = jnp.einsum('bi,bj->ij', jax.nn.one_hot(batch['label'], num_classes) * mask[:, None],
                           jax.nn.one_hot(pred, num_classes))
    return {'loss_sum': jnp.sum(losses.softmax_cross_entropy(logits, batch['label']) * mask),
            'correct': jnp.sum((pred == batch['label']) * mask), 'count': jnp.sum(mask), 'confusion': confusion}

  return jax.jit(step, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def evaluate_params(eval_step, params, dataset, batch_size, mesh):
  """Test loss, accuracy and confusion matrix (rows: true class, columns: predicted) over the whole split."""
  totals = None
  for batch in pipeline.prefetch_to_device(dataset.test_batches(batch_size=batch_size),
                                           sharding.batch_sharding(mesh)):
    out = eval_step(params, batch)
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.tree.map(np.asarray, totals)
  return {'test_loss': float(totals['loss_sum'] / totals['count']),
          'test_accuracy': float(totals['correct'] / totals['count']),
          'confusion': totals['confusion'].astype(np.int64)}


# ------------------------------------------------------------------------------------------------------ setup


@dataclasses.dataclass(frozen=True)
class Setup:
  """What training and evaluation of one config share."""
  apply_fn: Callable
  mesh: Any
  dataset: Any
  steps_per_epoch: int
  total_steps: int
  tx: Any
  fresh_state: Callable  # () -> a new training state from config.seed
  abstract_state: Any  # shapes, dtypes and shardings of the state, for restoring checkpoints


def _setup(config):
  init_fn, apply_fn = model_for(config)
  mesh = sharding.data_mesh()
  try:
    sharding.check_batch_divides(config.train.batch_size, mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dataset = dataset_for(config)
  steps_per_epoch = dataset.num_train // config.train.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f'train.batch_size={config.train.batch_size} exceeds the {dataset.num_train} training '
                      'examples; pass a smaller batch size or more data')
  total_steps = config.train.epochs * steps_per_epoch
  tx = optim.classifier_optimizer(config.train, total_steps)

  def fresh_state():
    key = jax.random.PRNGKey(config.seed)
    params = init_fn(jax.random.fold_in(key, 0), dataset.image_shape)
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32),
            'rng': jax.random.fold_in(key, 1)}

  # Every leaf replicated; the abstract state tells orbax how to lay out what it restores.
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding.replicated(mesh)),
                          jax.eval_shape(fresh_state))
  return Setup(apply_fn, mesh, dataset, steps_per_epoch, total_steps, tx, fresh_state, abstract)


def _checkpoints(config, workdir):
  return checkpoint_lib.Checkpoints(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                    keep=config.train.keep_checkpoints)


# ------------------------------------------------------------------------------------------------------ train


def train_and_evaluate(config, workdir):
  validate(config)
  workdir_lib.prepare(workdir, config)
  start_time = time.time()
  setup = _setup(config)
  mesh, dataset, steps_per_epoch, total_steps = setup.mesh, setup.dataset, setup.steps_per_epoch, setup.total_steps
  apply_fn = setup.apply_fn
  train_step = make_train_step(apply_fn, setup.tx, mesh)
  eval_step = make_eval_step(apply_fn, mesh, dataset.num_classes)

  ckpt = _checkpoints(config, workdir)
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(latest, setup.abstract_state)
    print(f'resuming from the checkpoint at step {latest}')
  else:
    state = jax.device_put(setup.fresh_state(), sharding.replicated(mesh))
  step = int(state['step'])
  writer = metrics_lib.MetricsWriter(workdir, start_step=step)
  tb = pipeline.tf().summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  stop = {'sigterm': False}
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
  bar = metrics_lib.progress(total_steps, config.experiment)
  bar.update(step)
  saved = latest

  def check_finite(m, at):
    bad = [f'{k.replace("_", " ")} {m[k]}' for k in ('loss', 'grad_norm', 'param_norm') if not np.isfinite(m[k])]
    if bad:
      ckpt.wait()
      good = ckpt.latest_step()
      kept = (f'the last good checkpoint (step {good}) is kept in {ckpt.directory}' if good is not None
              else 'no checkpoint had been saved yet')
      raise TrainingDiverged(f'training diverged at step {at} ({", ".join(bad)}); {kept}; lower '
                             '--config.train.learning_rate and run again in a new --workdir')

  def record_test(epoch):
    ev = evaluate_params(eval_step, state['params'], dataset, config.train.eval_batch_size, mesh)
    writer.write(step, epoch=epoch, test_loss=ev['test_loss'], test_accuracy=ev['test_accuracy'],
                 wall_s=round(time.time() - start_time, 2))
    with tb.as_default(step=step):
      pipeline.tf().summary.scalar('test/accuracy', ev['test_accuracy'])
      pipeline.tf().summary.scalar('test/loss', ev['test_loss'])

  try:
    for epoch in range(step // steps_per_epoch, config.train.epochs):
      batches = dataset.train_batches(batch_size=config.train.batch_size, seed=config.seed, epoch=epoch,
                                      skip_batches=step - epoch * steps_per_epoch)
      for batch in pipeline.prefetch_to_device(batches, sharding.batch_sharding(mesh)):
        state, m = train_step(state, batch)
        step += 1
        bar.update(1)
        terminating = stop['sigterm']  # read once: a signal arriving later in this step is seen at the next one
        due_save = step % config.train.checkpoint_every == 0 or terminating or step == total_steps
        if step % config.train.log_every == 0 or due_save:
          m = jax.tree.map(float, jax.device_get(m))
          check_finite(m, step)  # before any save, so no saved checkpoint holds a diverged state
          writer.write(step, epoch=epoch, **{f'train_{k}': v for k, v in m.items()})
          with tb.as_default(step=step):
            for k, v in m.items():
              pipeline.tf().summary.scalar(f'train/{k}', v)
          bar.set_postfix(loss=f'{m["loss"]:.4f}')
        if due_save and saved != step:
          ckpt.save(step, state)
          saved = step
        if terminating:
          ckpt.close()
          print(f'SIGTERM: saved the checkpoint at step {step} in {ckpt.directory}; run the same command to resume')
          return None
      record_test(epoch + 1)
    ckpt.wait()
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    bar.close()
    tb.flush()

  rows = read_metrics(workdir)  # the whole run, resumed parts included
  if not any('test_loss' in r and r['step'] == step for r in rows):
    record_test(config.train.epochs)  # killed between the last save and the last evaluation
    rows = read_metrics(workdir)
  history = [{k: r[k] for k in ('epoch', 'step', 'test_loss', 'test_accuracy')} for r in rows if 'test_loss' in r]
  ev = history[-1]
  results = {
      'experiment': config.experiment,
      'final_loss': [r['train_loss'] for r in rows if 'train_loss' in r][-1],
      'test_accuracy': ev['test_accuracy'],
      'test_loss': ev['test_loss'],
      'num_params': cnn.num_params(state['params']),
      'steps': step,
      'epochs': config.train.epochs,
      'wall_time_s': round(time.time() - start_time, 1),
      'params_sha256': checkpoint_lib.params_sha256(state['params']),
      'devices': [str(d) for d in jax.devices()],
      'per_epoch': history,
  }
  ckpt.close()
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  learning_curves(workdir, os.path.join(workdir, 'figures', 'learning_curves.png'))
  workdir_lib.write_text(os.path.join(workdir, 'results.md'), markdown(config, results))
  print(f'test accuracy {results["test_accuracy"]:.4f}, test loss {results["test_loss"]:.4f} after {step} steps '
        f'({results["wall_time_s"]} s)')
  return results


# ------------------------------------------------------------------------------------------------------ eval


def evaluate(config, workdir, step=None, fresh_points=0):
  """Evaluates the workdir's latest (or given) checkpoint on the test split; writes eval.json and figures."""
  if fresh_points:
    raise ConfigError('--fresh_points applies to hidden_units only')
  validate(config)
  setup = _setup(config)
  ckpt = _checkpoints(config, workdir)
  steps = ckpt.all_steps()
  if not steps:
    raise WorkdirError(f'{workdir} has no checkpoint; train first with the same --config and --workdir')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise WorkdirError(f'{workdir} has no checkpoint at step {step}; it has steps {sorted(steps)}')
  state = ckpt.restore(step, setup.abstract_state)
  ckpt.close()
  dataset = setup.dataset
  ev = evaluate_params(make_eval_step(setup.apply_fn, setup.mesh, dataset.num_classes), state['params'], dataset,
                       config.train.eval_batch_size, setup.mesh)
  confusion = ev['confusion']
  per_class = {name: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, name in enumerate(dataset.class_names)}
  out = {'step': step, 'test_accuracy': ev['test_accuracy'], 'test_loss': ev['test_loss'],
         'per_class_accuracy': per_class, 'confusion': confusion.tolist(),
         'params_sha256': checkpoint_lib.params_sha256(state['params'])}
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), out)
  confusion_figure(confusion, dataset.class_names, os.path.join(workdir, 'figures', 'confusion_matrix.png'),
                   f'{config.experiment}, step {step}: test accuracy {ev["test_accuracy"]:.4f}')
  print(f'step {step}: test accuracy {ev["test_accuracy"]:.4f}, test loss {ev["test_loss"]:.4f}')
  for name, acc in per_class.items():
    print(f'  {name:12s} {acc:.4f}')
  return out


# --------------------------------------------------------------------------------------------- reports, figures


def markdown(config, results):
  lines = [f'# {config.experiment}: results', '',
           f'Devices: {", ".join(results["devices"])}; {results["steps"]} steps in {results["wall_time_s"]} s.', '',
           '| test accuracy | test loss | final training loss | parameters | params sha256 |', '|---|---|---|---|---|',
           f'| {results["test_accuracy"]:.4f} | {results["test_loss"]:.4f} | {results["final_loss"]:.4f} | '
           f'{results["num_params"]:,} | `{results["params_sha256"][:16]}` |', '',
           '| epoch | step | test accuracy | test loss |', '|---|---|---|---|']
  lines += [f'| {h["epoch"]} | {h["step"]} | {h["test_accuracy"]:.4f} | {h["test_loss"]:.4f} |'
            for h in results['per_epoch']]
  lines += ['', '![learning curves](figures/learning_curves.png)']
  return '\n'.join(lines) + '\n'


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if l.strip()]


def learning_curves(workdir, out_path):
  """Training loss against step and test accuracy against step, from metrics.jsonl (resumed runs included)."""
  rows = read_metrics(workdir)
  train = [(r['step'], r['train_loss']) for r in rows if 'train_loss' in r]
  test = [(r['step'], r['test_accuracy']) for r in rows if 'test_accuracy' in r]
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
  if train:
    a.plot(*zip(*train))
  a.set(xlabel='step', ylabel='training loss', yscale='log', title='training loss')
  if test:
    b.plot(*zip(*test), marker='o')
  b.set(xlabel='step', ylabel='test accuracy', title='test accuracy')
  fig.savefig(out_path, dpi=110, bbox_inches='tight')
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
  fig.savefig(out_path, dpi=110, bbox_inches='tight')
  plt.close(fig)
