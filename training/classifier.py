"""Supervised training of image classifiers: one sharded, jitted step, verified checkpoints, resumable runs.

`train_and_evaluate(config, workdir, report)` runs these stages (configs: experiments/defaults.py and the experiment
files that override it):
  1. mesh       a 1-D 'data' mesh over every device of the job: the global batch split across them, parameters
                replicated (or the large dense layers split, train.shard_dense).
  2. input      the dataset's tf.data pipelines on the host, each process reading its own block of every global
                batch, prefetched onto the devices.
  3. state      {params, opt_state, step, rng} from the model and optimiser in the config.
  4. step       training/steps.py: one jitted update with shardings at its boundary (donating the old state off
                the CPU). Gradients come from jax.value_and_grad in the step; dropout keys are fold_in(rng, step).
  5. resume     from the workdir's latest checkpoint (verified); otherwise a fresh init from config.seed.
  6. loop       metrics.jsonl and TensorBoard every log_every steps, evaluation every epoch on the validation split
                (training examples held out, data.num_validation; before that step's checkpoint, so
                lr_schedule='plateau' decisions are saved), checkpoints every checkpoint_every steps
                (asynchronous), a save and a clean exit on SIGTERM, and a stop naming the step if the loss is no
                longer finite (the last good checkpoint stays).
  7. results    the test split evaluated once (10 crops where configured), results.json; `report`
                (experiments/reports/classifier.py) writes results.md and the learning-curve figure.

A run killed at any moment and started again with the same command ends with bitwise the same parameters as an
uninterrupted run: the step fixes the data position (epoch = step // steps_per_epoch; the epoch's shuffle is
rebuilt from (seed, epoch) and its first batches skipped) and every random key. In a multi-process job
(training/distributed.py) every process runs all of this; process 0 alone writes files.
"""
import dataclasses
import os
import signal
import time
from typing import Any
from typing import Callable

from flax import traverse_util
import jax
import numpy as np

import data as data_lib
from data import pipeline
import errors
from errors import ConfigError
from errors import require
from errors import TrainingDiverged
from errors import UserError
from errors import WorkdirError
import kernels
import nets
from training import checkpoint as checkpoint_lib
from training import distributed
from training import metrics as metrics_lib
from training import optim
from training import sharding
from training import steps
from training import workdir as workdir_lib

# Data-parallel training gains nothing from splitting a CPU into simulated devices (its all-reduce between them
# only adds work), so a CPU-only machine is one JAX device; an XLA_FLAGS device count set by the user wins.
CPU_DEVICES = 1


# ------------------------------------------------------------------------------------------------ model, data


def model_for(config):
  """(init(key, image_shape) -> params, apply(params, x, train, key) -> logits, kernel names) of config.model,
  apply computing with the kernels config.model.kernels chooses for the platform JAX computes on."""
  module, arch = _arch(config)
  try:
    ops, names = kernels.resolve(config.model.kernels, jax.default_backend())
  except kernels.KernelError as e:
    raise ConfigError(str(e)) from None
  return (lambda key, shape: module.init(key, arch, shape),
          lambda params, x, train=False, key=None: module.apply(params, x, arch, train=train, key=key, ops=ops),
          names)


def _arch(config):
  """(the model's module, its checked Arch) of config.model."""
  module = nets.module(config.model.name)
  try:
    arch = module.Arch.from_config(config.model)
  except (TypeError, ValueError) as e:  # e.g. model.conv=(32, 5): numbers where (features, kernel, stride) go
    raise ConfigError(f'the model section does not describe a {config.model.name} ({e}); see --show_config for '
                      'the form of each key') from None
  arch.validate()
  return module, arch


def eval_crops(config):
  """Views per test image in the final evaluation: 1 (centre) or 10 (corners, centre and their mirrors)."""
  offered = data_lib.module(config.data.name).Dataset.test_views
  if config.eval.crops not in offered:
    raise ConfigError(f'eval.crops={config.eval.crops} is not offered by {config.data.name}; choose one of '
                      f'{", ".join(map(str, offered))}')
  return config.eval.crops


def validate(config):
  """Raises ConfigError for the first value that cannot run among those that need neither the data nor a
  workdir (the model, the optimiser and schedule, the batch sizes against the devices), so a mistake costs
  seconds and writes nothing."""
  for key in ('batch_size', 'eval_batch_size', 'epochs', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
    require(config.train[key] >= 1, f'train.{key} must be >= 1, got {config.train[key]}')
  profile = tuple(config.train.profile_steps)
  require(not profile or (len(profile) == 2 and 1 <= profile[0] <= profile[1]),
          f'train.profile_steps must be () or (first, last) with 1 <= first <= last, got {profile}; e.g. '
          '--config.train.profile_steps=100,110')
  require(config.train.progress_every_s >= 0, f'train.progress_every_s must be >= 0, got '
          f'{config.train.progress_every_s}')
  for key in ('num_train', 'num_test'):
    require(config.data[key] >= 0, f'data.{key} must be >= 0 (0: the whole split), got {config.data[key]}')
  require(config.data.num_validation >= 0, f'data.num_validation must be >= 0 (0: per-epoch evaluation on the test '
          f'split), got {config.data.num_validation}')
  data_lib.module(config.data.name)  # a known dataset
  _arch(config)
  optim.optimizer(config.train, total_steps=1)
  eval_crops(config)
  mesh = sharding.data_mesh()
  try:
    sharding.check_batch_divides(config.train.batch_size, mesh)
    sharding.check_batch_divides(config.train.eval_batch_size, mesh, key='train.eval_batch_size')
  except ValueError as e:
    raise ConfigError(str(e)) from None


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
  schedule: Callable  # step -> the schedule's step size (training/optim.py)
  fresh_state: Callable  # () -> a new training state from config.seed, laid out as state_sharding says
  abstract_state: Any  # shapes, dtypes and shardings of the state, for restoring checkpoints
  state_sharding: Any  # the state's shardings (a pytree like the state)
  kernels: tuple  # the speed kernels apply computes with (kernels/__init__.py)


def _setup(config):
  validate(config)
  init_fn, apply_fn, kernel_names = model_for(config)  # the model checked before the data is loaded
  mesh = sharding.data_mesh()
  # process 0 prepares the data, then the others read it
  dataset = distributed.main_first(lambda: data_lib.module(config.data.name).Dataset(config.data))
  steps_per_epoch = dataset.num_train // config.train.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f'train.batch_size={config.train.batch_size} exceeds the {dataset.num_train} training '
                      'examples; pass a smaller batch size or more data')
  total_steps = config.train.epochs * steps_per_epoch
  tx = optim.optimizer(config.train, total_steps)
  schedule = optim.schedule(config.train, total_steps)

  def new_state():
    key = jax.random.PRNGKey(config.seed)
    params = init_fn(jax.random.fold_in(key, 0), dataset.image_shape)
    return steps.initial_state(params, tx, jax.random.fold_in(key, 1))

  shapes = jax.eval_shape(new_state)
  state_sharding = sharding.state_shardings(shapes, mesh, shard_dense=config.train.shard_dense)
  # The abstract state tells orbax how to lay out what it restores.
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, state_sharding)
  fresh_state = jax.jit(new_state, out_shardings=state_sharding)  # each device makes only its part
  return Setup(apply_fn, mesh, dataset, steps_per_epoch, total_steps, tx, schedule, fresh_state, abstract,
               state_sharding, kernel_names)


def _eval_step(setup, crops):
  """The jitted evaluation of `crops` views per image (made on the accelerator where the dataset does that)."""
  device_test = getattr(setup.dataset, 'device_test', None)
  return steps.make_eval_step(setup.apply_fn, setup.mesh, setup.dataset.num_classes,
                              preprocess=device_test(crops) if device_test else None)


def _check_metrics_cover(workdir, step, steps_per_epoch, split):
  """A WorkdirError unless metrics.jsonl holds what a resume from the checkpoint at `step` builds on: the training
  row of that step (written before every save) and the evaluation of every epoch it completed. A file truncated
  or deleted under a run would otherwise end in a results.json that silently lacks part of the run."""
  path = os.path.join(workdir, workdir_lib.METRICS_FILE)
  rows = workdir_lib.read_jsonl(path)[1] if os.path.exists(path) else []
  evaluated = {r.get('epoch') for r in rows if f'{split}_loss' in r and r.get('step', 0) <= step}
  missing = [e for e in range(1, step // steps_per_epoch + 1) if e not in evaluated]
  gaps = ([f'the {split} evaluation of epoch{"s" if len(missing) > 1 else ""} {", ".join(map(str, missing[:5]))}'
           f'{" ..." if len(missing) > 5 else ""}'] if missing else [])
  if not any(r.get('step') == step and 'train_loss' in r for r in rows):
    gaps.append(f'the training row of step {step}')
  if gaps:
    raise WorkdirError(f'{path} lacks {" and ".join(gaps)} that the checkpoint at step {step} follows (the file '
                       'was truncated or deleted): restore it from a copy, or pass a new --workdir; resuming would '
                       'report the run without that history')


def _verify(dataset, splits):
  """The dataset's own check of what `splits` will read (a prepared store's checksums), where it has one."""
  if hasattr(dataset, 'verify'):
    dataset.verify(dict.fromkeys(splits))


def _checkpoints(config, workdir):
  return checkpoint_lib.Checkpoints(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                    keep=config.train.keep_checkpoints)


# ------------------------------------------------------------------------------------------------------ train


def train_and_evaluate(config, workdir, report):
  """Trains, evaluates and reports (`report`: experiments/reports/classifier.py). In a multi-process job every
  process runs this; process 0 alone writes config.json, metrics, TensorBoard events, figures and results, and
  checkpoints are saved collectively."""
  main = distributed.is_main()
  if main:
    workdir_lib.check_usable(workdir, config)  # before the data is loaded: a wrong workdir costs no time
  start_time = time.time()
  setup = _setup(config)  # the config checked, then the data loaded: everything is checked before a write
  per_epoch = 'validation' if setup.dataset.num_validation else 'test'  # the split every epoch is evaluated on
  _verify(setup.dataset, ('train', per_epoch, 'test'))
  ckpt = _checkpoints(config, workdir)
  latest = ckpt.latest_step()
  restored = ckpt.restore(latest, setup.abstract_state) if latest is not None else None  # verified before a write

  def check_and_prepare():
    if latest is not None:
      _check_metrics_cover(workdir, latest, setup.steps_per_epoch, per_epoch)
    workdir_lib.prepare(workdir, config)

  distributed.main_first(lambda: check_and_prepare() if main else None)
  mesh, dataset, steps_per_epoch, total_steps = setup.mesh, setup.dataset, setup.steps_per_epoch, setup.total_steps
  apply_fn = setup.apply_fn
  train_step = steps.make_train_step(apply_fn, setup.tx, mesh, setup.state_sharding,
                                     preprocess=getattr(dataset, 'device_train', None))
  eval_step = _eval_step(setup, 1)
  crops = eval_crops(config)

  if restored is not None:
    state = restored
    if main:
      print(f'resuming from the checkpoint at step {latest}')
  else:
    state = setup.fresh_state()
  step = int(state.step)
  writer = metrics_lib.MetricsWriter(workdir, start_step=step, tensorboard=True) if main else metrics_lib.NullWriter()

  # SIGTERM (a scheduler's pre-emption) and a first Ctrl-C (SIGINT) ask for a save at the next step boundary; a
  # second Ctrl-C stops at once (KeyboardInterrupt), keeping the checkpoints saved so far.
  stop = {'signal': None}

  def on_signal(signum, frame):
    del frame
    stop['signal'] = signum
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)

  previous_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  progress = metrics_lib.Progress(total_steps, config.experiment, unit='images', start=step, disable=not main,
                                  every_s=config.train.progress_every_s)
  trace = metrics_lib.StepTrace(os.path.join(workdir, 'profile'), config.train.profile_steps)
  logged = {'step': step, 'time': time.time()}  # for images/s between logged steps
  saved = latest
  multiprocess = distributed.is_multiprocess()

  def check_finite(m, at):
    bad = [f'{k.replace("_", " ")} {m[k]}' for k in ('loss', 'grad_norm', 'param_norm') if not np.isfinite(m[k])]
    if bad:
      ckpt.wait()
      good = ckpt.latest_step()
      kept = (f'the last good checkpoint (step {good}) is kept in {ckpt.directory}' if good is not None
              else 'no checkpoint had been saved yet')
      raise TrainingDiverged(f'training diverged at step {at} ({", ".join(bad)}); {kept}; lower '
                             '--config.train.learning_rate and run again in a new --workdir')

  def record_eval(epoch):
    """Evaluates the per-epoch split (centre crops), logs, and lets lr_schedule='plateau' react; returns the new
    state."""
    ev = steps.evaluate_dataset(eval_step, steps.stack_models(state.params), dataset, config.train.eval_batch_size,
                                mesh, split=per_epoch)
    writer.write(step, epoch=epoch, **{f'{per_epoch}_{k}': ev[f'{per_epoch}_{k}'] for k in ('loss', 'accuracy')},
                 **{f'{per_epoch}_top5_error': ev['top5_error']}, wall_s=round(time.time() - start_time, 2))
    opt_state, message = optim.plateau_update(state.opt_state, ev['top1_error'], config.train, per_epoch)
    if message and main:
      print(f'epoch {epoch}: {message}')
    return state.replace(opt_state=opt_state)

  try:
    for epoch in range(step // steps_per_epoch, config.train.epochs):
      batches = dataset.train_batches(batch_size=config.train.batch_size, seed=config.seed, epoch=epoch,
                                      skip_batches=step - epoch * steps_per_epoch, process=distributed.process())
      for batch in pipeline.prefetch_to_device(batches, sharding.batch_sharding(mesh)):
        with trace.step(step + 1):
          state, m = train_step(state, batch)
        step += 1
        trace.after(step, state)
        shown = {}  # what the progress line shows, updated at logged steps
        if step % steps_per_epoch == 0:  # evaluated before the save, so a checkpoint holds what the test decided
          state = record_eval(step // steps_per_epoch)
        # read once: a signal arriving later in this step is seen at the next check. A multi-process job checks
        # at logging steps only, where all processes agree (a collective, kept off the other steps), so they save
        # the same step together
        if multiprocess:
          terminating = step % config.train.log_every == 0 and distributed.any_process(stop['signal'] is not None)
        else:
          terminating = stop['signal'] is not None
        due_save = step % config.train.checkpoint_every == 0 or terminating or step == total_steps
        if step % config.train.log_every == 0 or due_save:
          m = jax.tree.map(float, jax.device_get(m))
          check_finite(m, step)  # before any save, so no saved checkpoint holds a diverged state
          now, rate = time.time(), optim.learning_rate(setup.schedule, state.opt_state, step)
          per_s = config.train.batch_size * (step - logged['step']) / max(now - logged['time'], 1e-9)
          logged.update(step=step, time=now)
          writer.write(step, epoch=epoch, **{f'train_{k}': v for k, v in m.items()}, train_learning_rate=rate,
                       train_images_per_s=round(per_s, 1))
          shown = {'epoch': f'{epoch + 1}/{config.train.epochs}', 'loss': m['loss'], 'lr': rate}
        progress.update(1, work=config.train.batch_size, **shown)
        if due_save and saved != step:
          ckpt.save(step, state)
          saved = step
        if terminating:
          ckpt.close()
          name = signal.Signals(stop['signal'] or signal.SIGTERM).name
          message = (f'{name}: saved the checkpoint at step {step} in {ckpt.directory}; run the same command to '
                     'resume')
          if stop['signal'] == signal.SIGINT:
            raise errors.Interrupted(message)
          if main:
            print(message)
          return None
    ckpt.wait()
  except UserError:
    try:
      ckpt.wait()  # a checkpoint still being written is completed before the error ends the process
    except UserError:
      pass
    raise
  finally:
    for s, handler in previous_handlers.items():
      signal.signal(s, handler)
    trace.close()
    progress.close()
    writer.flush()

  ten = test = None
  if per_epoch == 'validation':  # the test split, read once (collective: every process evaluates its part)
    test = steps.evaluate_dataset(eval_step, steps.stack_models(state.params), dataset, config.train.eval_batch_size,
                                  mesh)
  if crops > 1:
    ten = steps.evaluate_dataset(_eval_step(setup, crops), steps.stack_models(state.params), dataset,
                         config.train.eval_batch_size, mesh, crops=crops)
  params_sha256 = checkpoint_lib.params_sha256(state.params)  # collective where parameters are split
  ckpt.close()
  if not main:
    return None
  rows = workdir_lib.read_jsonl(os.path.join(workdir, workdir_lib.METRICS_FILE))[1]  # resumed parts included
  history = [{k: r.get(k) for k in ('epoch', 'step', f'{per_epoch}_loss', f'{per_epoch}_accuracy',
                                     f'{per_epoch}_top5_error')} for r in rows if f'{per_epoch}_loss' in r]
  ev = history[-1] if test is None else {**test, 'test_top5_error': test['top5_error']}
  final = {'top1_error': 1.0 - ev['test_accuracy'], 'top5_error': ev['test_top5_error'], 'crops': 1}
  if ten:
    final = {'top1_error': ten['top1_error'], 'top5_error': ten['top5_error'], 'crops': crops}
  results = {
      'experiment': config.experiment,
      'final_loss': [r['train_loss'] for r in rows if 'train_loss' in r][-1],
      'test_accuracy': ev['test_accuracy'],
      'test_loss': ev['test_loss'],
      'top1_error': final['top1_error'],
      'top5_error': final['top5_error'],
      'eval_crops': final['crops'],
      'centre_crop_top1_error': 1.0 - ev['test_accuracy'],
      'centre_crop_top5_error': ev['test_top5_error'],
      'num_params': nets.num_params(state.params),
      'parameters': {'/'.join(k): list(v.shape) for k, v in traverse_util.flatten_dict(state.params).items()},
      'steps': step,
      'epochs': config.train.epochs,
      'wall_time_s': round(time.time() - start_time, 1),
      'params_sha256': params_sha256,
      'devices': [str(d) for d in jax.devices()],
      'processes': jax.process_count(),
      'kernels': list(setup.kernels),  # the speed kernels that computed it
      'per_epoch_split': per_epoch,
      'per_epoch': history,
  }
  if per_epoch == 'validation':
    results.update(validation_accuracy=history[-1]['validation_accuracy'],
                   validation_loss=history[-1]['validation_loss'], num_validation=dataset.num_validation)
  results = report.analyse(config, workdir, results, metrics=rows)
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  workdir_lib.write_text(os.path.join(workdir, 'results.md'), report.markdown(config, results))
  print(report.summary(results))
  return results


# ------------------------------------------------------------------------------------------------------ eval


def _restore_params(config, setup, workdir, step=None):
  """(step, params) of a workdir's latest (or given) checkpoint; one clear line if there is none."""
  ckpt = _checkpoints(config, workdir)
  saved = ckpt.all_steps()
  if not saved:
    raise WorkdirError(f'{workdir} has no checkpoint; train first with the same --config and --workdir')
  step = saved[-1] if step is None else step
  if step not in saved:
    raise WorkdirError(f'{workdir} has no checkpoint at step {step}; it has steps {sorted(saved)}')
  try:
    state = ckpt.restore(step, setup.abstract_state)
  except (ValueError, TypeError) as e:  # another architecture: shapes or tree structure differ
    raise WorkdirError(f'the checkpoint at step {step} in {workdir} does not fit this config\'s model ({e}); '
                       'every ensemble member must be trained with the same model config') from None
  finally:
    ckpt.close()
  return step, state.params


def evaluate_workdir(config, workdir, report, step=None, fresh_points=0, ensemble=()):
  """Evaluates the workdir's latest (or given) checkpoint on the test split, alone or averaged with the latest
  checkpoints of the `ensemble` workdirs; writes eval.json, and `report` the evaluation section of results.md
  and the figures."""
  if fresh_points:
    raise ConfigError('--fresh_points applies to hidden_units only')
  setup = _setup(config)
  step, params = _restore_params(config, setup, workdir, step)
  members = [params] + [_restore_params(config, setup, d)[1] for d in ensemble]
  _verify(setup.dataset, ('test',))
  if distributed.is_main():
    workdir_lib.lock(workdir)  # the inputs are sound: from here on this process writes the workdir
  dataset, crops = setup.dataset, eval_crops(config)
  ev = steps.evaluate_dataset(_eval_step(setup, crops), steps.stack_models(*members), dataset,
                              config.train.eval_batch_size, setup.mesh, crops)
  out = {'step': step, 'models': len(members), 'ensemble': list(ensemble), 'crops': crops,
         'test_accuracy': ev['test_accuracy'], 'test_loss': ev['test_loss'], 'top1_error': ev['top1_error'],
         'top5_error': ev['top5_error'], 'params_sha256': checkpoint_lib.params_sha256(params)}
  if not distributed.is_main():  # every process evaluated its part; process 0 reports
    return out
  if ev['confusion'] is not None:
    out['per_class_accuracy'] = {name: float(ev['confusion'][i, i] / max(ev['confusion'][i].sum(), 1))
                                 for i, name in enumerate(dataset.class_names)}
    out['confusion'] = ev['confusion'].tolist()
  out = report.analyse_evaluation(config, workdir, out, class_names=dataset.class_names)
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), out)
  md = os.path.join(workdir, 'results.md')
  before = ''
  if os.path.exists(md):
    with open(md) as f:
      before = f.read().split(report.EVAL_HEADING)[0].rstrip() + '\n\n'
  workdir_lib.write_text(md, before + report.evaluation_markdown(config, out))
  print(report.evaluation_summary(out))
  return out
