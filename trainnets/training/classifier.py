"""Supervised training of image classifiers: one sharded, jitted step, verified checkpoints, resumable runs.

`train_and_evaluate(config, workdir)` runs these stages (configs: experiments/defaults.py and the experiment files
that override it):
  1. mesh       a 1-D 'data' mesh over every device of the job: the global batch split across them, parameters
                replicated (or the large dense layers split, train.shard_dense).
  2. input      the dataset's tf.data pipelines on the host, each process reading its own block of every global
                batch, prefetched onto the devices.
  3. state      {params, opt_state, step, rng} from the model and optimiser in the config.
  4. step       trainnets/training/steps.py: one jitted update with shardings at its boundary (donating the old state
                off the CPU). Gradients come from jax.value_and_grad in the step; dropout keys are fold_in(rng, step).
  5. resume     from the workdir's latest checkpoint (verified); otherwise a fresh init from config.seed.
  6. loop       step, evaluate, log, save: evaluation every epoch on the validation split (training examples
                held out, data.num_validation; before that step's checkpoint, so lr_schedule='plateau' decisions
                are saved), metrics.jsonl and TensorBoard every log_every steps, checkpoints every
                checkpoint_every steps (asynchronous); each cadence is trainnets/training/loop.py's itstime. SIGTERM and
                a first Ctrl-C save and stop (loop.StopRequests); a loss that is no longer finite stops naming the
                step (the last good checkpoint stays).
  7. results    the test split evaluated once (10 crops where configured); results.json, a pure function of the
                config, metrics.jsonl and the final evaluation (`results`). experiments/report.py renders
                results.md and the figures from the workdir.

A run killed at any moment and started again with the same command ends with bitwise the same parameters as an
uninterrupted run: the step fixes the data position (epoch = step // steps_per_epoch; the epoch's shuffle is
rebuilt from (seed, epoch) and its first batches skipped) and every random key. In a multi-process job
(trainnets/training/distributed.py) every process runs all of this; process 0 alone writes files.
"""
import dataclasses
import os
import signal
import time
from typing import Any
from typing import Callable

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

import nets
from nets import layers
from trainnets import data as data_lib
from trainnets import errors
from trainnets import kernels
from trainnets.data import pipeline
from trainnets.errors import ConfigError
from trainnets.errors import require
from trainnets.errors import TrainingDiverged
from trainnets.errors import WorkdirError
from trainnets.training import checkpoint as checkpoint_lib
from trainnets.training import distributed
from trainnets.training import loop
from trainnets.training import metrics as metrics_lib
from trainnets.training import optim
from trainnets.training import sharding
from trainnets.training import steps
from trainnets.training import workdir as workdir_lib

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


def _kernels_applied(config, names, image_shape):
  """The kernels of `names` that change something of this model (kernels.applied), found by tracing it once
  (shapes only) with ops that record their calls: an MLP uses none of the convolution kernels."""
  module, arch = _arch(config)
  calls = []
  ops = kernels.recording(layers.PLAIN, calls)
  key = jax.random.PRNGKey(0)
  jax.eval_shape(lambda: module.apply(module.init(key, arch, image_shape), jnp.zeros((2, *image_shape)), arch,
                                      train=True, key=key, ops=ops))
  return kernels.applied(names, calls)


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
  schedule: Callable  # step -> the schedule's step size (trainnets/training/optim.py)
  fresh_state: Callable  # () -> a new training state from config.seed, laid out as state_sharding says
  abstract_state: Any  # shapes, dtypes and shardings of the state, for restoring checkpoints
  state_sharding: Any  # the state's shardings (a pytree like the state)
  kernels: tuple  # the speed kernels that change something of apply (trainnets/kernels/__init__.py)


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
               state_sharding, _kernels_applied(config, kernel_names, dataset.image_shape))


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


def _restore_or_init(config, workdir, setup, per_epoch, extend):
  """(checkpoints, the state to train from) after every check: the workdir (before the data is read), the data's
  own check, the latest checkpoint (verified) and the metrics it follows; then process 0 takes the workdir and
  writes config.json. Nothing is written before all of them pass."""
  main = distributed.is_main()
  _verify(setup.dataset, ('train', per_epoch, 'test'))
  ckpt = _checkpoints(config, workdir)
  latest = ckpt.latest_step()
  restored = ckpt.restore(latest, setup.abstract_state) if latest is not None else None

  def check_and_prepare():
    if latest is not None:
      _check_metrics_cover(workdir, latest, setup.steps_per_epoch, per_epoch)
    workdir_lib.prepare(workdir, config, extend, at_step=latest or 0)

  distributed.main_first(lambda: check_and_prepare() if main else None)
  if restored is None:
    return ckpt, setup.fresh_state()
  if main:
    print(f'resuming from the checkpoint at step {latest}')
  return ckpt, restored


def _train_batches(config, dataset, start, steps_per_epoch):
  """This process's part of every training batch from step `start` on, across epochs: each epoch's order is
  fixed by (seed, epoch), and a resumed epoch skips the batches already trained on."""
  for epoch in range(start // steps_per_epoch, config.train.epochs):
    yield from dataset.train_batches(batch_size=config.train.batch_size, seed=config.seed, epoch=epoch,
                                     skip_batches=max(start - epoch * steps_per_epoch, 0),
                                     process=distributed.process())


def _check_finite(m, step, ckpt):
  """A TrainingDiverged error naming `step` and the last good checkpoint where a logged number is not finite."""
  bad = [f'{k.replace("_", " ")} {m[k]}' for k in ('loss', 'grad_norm', 'param_norm') if not np.isfinite(m[k])]
  if bad:
    ckpt.wait()
    good = ckpt.latest_step()
    kept = (f'the last good checkpoint (step {good}) is kept in {ckpt.directory}' if good is not None
            else 'no checkpoint had been saved yet')
    raise TrainingDiverged(f'training diverged at step {step} ({", ".join(bad)}); {kept}; lower '
                           '--config.train.learning_rate and run again in a new --workdir')


def train_and_evaluate(config, workdir, extend=False):
  """Trains and evaluates `config` into `workdir`: config.json, metrics.jsonl, TensorBoard events, checkpoints and
  results.json (process 0 writes files; checkpoints are saved collectively). `extend` (train.py --extend): a
  workdir's run continues under another value of a key that defines it (train.epochs, say), the change recorded.
  Returns the results in process 0 (None elsewhere, and when a signal stopped the run after its save);
  experiments/report.py renders them."""
  main = distributed.is_main()
  if main:
    workdir_lib.check_usable(workdir, config, extend)  # before the data is loaded: a wrong workdir costs no time
  start_time = time.time()
  setup = _setup(config)  # the config checked, then the data loaded: everything is checked before a write
  per_epoch = 'validation' if setup.dataset.num_validation else 'test'  # the split every epoch is evaluated on
  ckpt, state = _restore_or_init(config, workdir, setup, per_epoch, extend)
  done = os.path.join(workdir, 'results.json')
  if int(state.step) == setup.total_steps and os.path.exists(done):  # finished: a rerun changes nothing
    ckpt.close()
    if main:
      print(f'the run in {workdir} is finished; its results stand (eval.py evaluates it in other ways)')
    return workdir_lib.read_json(done) if main else None
  t, total, per = config.train, setup.total_steps, setup.steps_per_epoch
  train_step = steps.make_train_step(setup.apply_fn, setup.tx, setup.mesh, setup.state_sharding,
                                     preprocess=getattr(setup.dataset, 'device_train', None))
  eval_step = _eval_step(setup, 1)
  step = start = int(state.step)
  writer = (metrics_lib.MetricsWriter(workdir, start_step=step, tensorboard=True, config=config)
            if main else metrics_lib.NullWriter())
  # seconds the run has taken over all its segments: the last the kept rows recorded (the time between that row
  # and a stop is not counted), plus this segment's
  before = max((r['elapsed_s'] for r in writer.rows if 'elapsed_s' in r), default=0.0)
  elapsed = lambda: round(before + time.time() - start_time, 1)
  progress = metrics_lib.Progress(total, config.experiment, unit='images', start=step, disable=not main,
                                  every_s=t.progress_every_s)
  trace = metrics_lib.StepTrace(os.path.join(workdir, 'profile'), t.profile_steps)
  rate = metrics_lib.Rate(step, per_step=t.batch_size)
  batches = pipeline.prefetch_to_device(_train_batches(config, setup.dataset, start, per),
                                        sharding.batch_sharding(setup.mesh))
  with ckpt, loop.StopRequests() as stop, progress, trace, writer:
    for step, batch in zip(range(start + 1, total + 1), batches):
      epoch = (step - 1) // per + 1  # the epoch this step belongs to, from 1 (as evaluation rows count)
      with trace.step(step):
        state, m = train_step(state, batch)
      trace.after(step, state)
      if loop.itstime(step, per):  # evaluated before the save, so a checkpoint holds what the evaluation decided
        state = _evaluate_epoch(config, setup, eval_step, state, writer, step, per_epoch, elapsed)
      stopping = stop.agreed(step, t.log_every)
      save = loop.itstime(step, t.checkpoint_every, total) or stopping
      shown = {}
      if loop.itstime(step, t.log_every) or save:
        m = jax.tree.map(float, jax.device_get(m))
        _check_finite(m, step, ckpt)  # before any save, so no checkpoint holds a diverged state
        lr = optim.learning_rate(setup.schedule, state.opt_state, step)
        writer.write(step, epoch=epoch, **{f'train_{k}': v for k, v in m.items()}, train_learning_rate=lr,
                     train_images_per_s=rate.per_s(step), elapsed_s=elapsed())
        shown = {'epoch': f'{epoch}/{t.epochs}', 'loss': m['loss'], 'lr': lr}
      progress.update(1, work=t.batch_size, **shown)
      if save:
        ckpt.save(step, state)
      if stopping:
        return _stopped(stop, step, ckpt)
  final = _final_evaluation(config, setup, eval_step, state, per_epoch)
  if not main:
    return None
  rows = workdir_lib.read_jsonl(os.path.join(workdir, workdir_lib.METRICS_FILE))[1]  # resumed parts included
  final.update(wall_time_s=elapsed(), kernels=list(setup.kernels),
               devices=[str(d) for d in jax.devices()], processes=jax.process_count(),
               command=metrics_lib.command(), machine=metrics_lib.machine())
  out = results(config, rows, final)
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), out)
  return out


def _evaluate_epoch(config, setup, eval_step, state, writer, step, split, elapsed):
  """Evaluates the per-epoch split (centre crops) at `step`, the end of an epoch, logs it, and lets
  lr_schedule='plateau' react; returns the state with the schedule's decision."""
  epoch = step // setup.steps_per_epoch  # from 1: the epochs completed
  ev = steps.evaluate_dataset(eval_step, steps.stack_models(state.params), setup.dataset,
                              config.train.eval_batch_size, setup.mesh, split=split)
  writer.write(step, epoch=epoch, **{f'{split}_{k}': ev[f'{split}_{k}'] for k in ('loss', 'accuracy')},
               **{f'{split}_top5_error': ev['top5_error']}, elapsed_s=elapsed())
  opt_state, message = optim.plateau_update(state.opt_state, ev['top1_error'], config.train, split)
  if message and distributed.is_main():
    print(f'epoch {epoch}: {message}')
  return state.replace(opt_state=opt_state)


def _stopped(stop, step, ckpt):
  """After the save a signal asked for: a first Ctrl-C ends as Interrupted, SIGTERM returns None (exit 0)."""
  ckpt.close()
  message = f'{stop.name}: saved the checkpoint at step {step} in {ckpt.directory}; run the same command to resume'
  if stop.signal == signal.SIGINT:
    raise errors.Interrupted(message)
  if distributed.is_main():
    print(message)


def _final_evaluation(config, setup, eval_step, state, per_epoch):
  """What results() needs of the final state: the test split read once (collective: every process evaluates its
  part) where epochs were evaluated on validation images, the eval.crops views, the parameters' hash and shapes."""
  params = steps.stack_models(state.params)
  final = {'params_sha256': checkpoint_lib.params_sha256(state.params), 'steps': int(state.step),  # collective
           'num_params': nets.num_params(state.params), 'num_validation': setup.dataset.num_validation,
           'parameters': {'/'.join(k): list(v.shape) for k, v in traverse_util.flatten_dict(state.params).items()}}
  if per_epoch == 'validation':
    final['test'] = steps.evaluate_dataset(eval_step, params, setup.dataset, config.train.eval_batch_size, setup.mesh)
  crops = eval_crops(config)
  if crops > 1:
    final['crops'] = steps.evaluate_dataset(_eval_step(setup, crops), params, setup.dataset,
                                            config.train.eval_batch_size, setup.mesh, crops=crops)
  return final


def results(config, rows, final):
  """results.json as a pure function of the config, the rows of metrics.jsonl (resumed parts included) and
  `final` (_final_evaluation's numbers of the last state, and how the run was made)."""
  split = 'validation' if config.data.num_validation else 'test'
  history = [{k: r.get(k) for k in ('epoch', 'step', f'{split}_loss', f'{split}_accuracy', f'{split}_top5_error')}
             for r in rows if f'{split}_loss' in r]
  test = final.get('test')
  ev = history[-1] if test is None else {**test, 'test_top5_error': test['top5_error']}
  crops = final.get('crops')
  out = {
      'experiment': config.experiment,
      'final_loss': [r['train_loss'] for r in rows if 'train_loss' in r][-1],
      'test_accuracy': ev['test_accuracy'],
      'test_loss': ev['test_loss'],
      'top1_error': crops['top1_error'] if crops else 1.0 - ev['test_accuracy'],
      'top5_error': crops['top5_error'] if crops else ev['test_top5_error'],
      'eval_crops': config.eval.crops if crops else 1,
      'centre_crop_top1_error': 1.0 - ev['test_accuracy'],
      'centre_crop_top5_error': ev['test_top5_error'],
      'num_params': final['num_params'],
      'parameters': final['parameters'],
      'steps': final['steps'],
      'epochs': config.train.epochs,
      'wall_time_s': final['wall_time_s'],
      'params_sha256': final['params_sha256'],
      'devices': final['devices'],
      'processes': final['processes'],
      'kernels': final['kernels'],  # the speed kernels that computed it
      'per_epoch_split': split,
      'per_epoch': history,
      'command': final.get('command', ''),
      'machine': final.get('machine', ''),
  }
  if split == 'validation':
    out.update(validation_accuracy=history[-1]['validation_accuracy'], validation_loss=history[-1]['validation_loss'],
               num_validation=final['num_validation'])
  return out


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


def evaluate_workdir(config, workdir, step=None, fresh_points=0, ensemble=()):
  """Evaluates the workdir's latest (or given) checkpoint on the test split, alone or averaged with the latest
  checkpoints of the `ensemble` workdirs, and writes eval.json (with the confusion matrix where the dataset names
  its classes). Returns it in process 0, None elsewhere; experiments/report.py renders it."""
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
  if not distributed.is_main():  # every process evaluated its part; process 0 writes
    return None
  if ev['confusion'] is not None:
    out['per_class_accuracy'] = {name: float(ev['confusion'][i, i] / max(ev['confusion'][i].sum(), 1))
                                 for i, name in enumerate(dataset.class_names)}
    out['class_names'] = list(dataset.class_names)
    out['confusion'] = ev['confusion'].tolist()
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), out)
  return out
