"""Training and evaluation: the train state, the jitted steps, the loop and its small parts.

`train_and_evaluate(config, workdir)` trains, evaluates, writes metrics and checkpoints, and resumes
from the latest checkpoint in `workdir` (alexnet_jax.resume: also after a config change). The
parts the loop calls are units of their own: `NanPolicy`, `ProgressReport`, `Evaluator`,
`save_checkpoint`; the optimizer, the schedules and the plateau controller are in
alexnet_jax.optim. Everything is deterministic given `config.seed`: dropout keys are folded from
the step, and the data order is a function of the data position (alexnet_jax.data.Position).
"""

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from alexnet_jax import (checkpoint, config_checks, data, metrics, optim, parallel, preemption,
                         registry, resume)
from alexnet_jax.errors import UserError
from alexnet_jax.workdir import Workdir


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       image_shape: tuple[int, int, int],
                       learning_rate: jax.Array | None = None) -> TrainState:
  """A fresh state: `model`'s parameters for [H, W, C] `image_shape` images, `tx`'s state.

  `learning_rate` (a float32 scalar, not weakly typed: the train step's input must keep one type),
  when given, is the rate in the optimizer state instead of the one `tx` was built with (its
  optax.inject_hyperparams state). Under jit it is then an argument, not a constant of the
  program, so runs that differ only in the rate (a sweep's grid) lower to the same init: with
  JAX's persistent compilation cache (the test suite's, or JAX_COMPILATION_CACHE_DIR) they
  compile it once. Each run still traces its own.
  """
  params = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  opt_state = tx.init(params)
  if learning_rate is not None:
    opt_state.hyperparams['learning_rate'] = learning_rate
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def train_step(state: TrainState, batch: dict[str, jax.Array], learning_rate: jax.Array,
               dropout_key: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step; returns the new state and the batch's metric sums.

  A step whose loss or gradients are not finite leaves params and optimizer state unchanged and
  is reported in the sums ('nonfinite_steps', 'first_nonfinite_step'); the loop then stops or
  skips it (config.nan_policy, `NanPolicy`). The guard is decided before the update, so the
  update runs in place under a `lax.cond` (checking the updated parameters as well, then
  selecting between old and new state, took two more passes over the 61M parameters: the
  paper model's batch-32 step was 1.12x slower, docs/performance.md). Finite gradients can still
  overflow float32 parameters (an absurd learning rate): `NanPolicy.check_params` catches that
  before any save or evaluation.
  """
  step_key = jax.random.fold_in(dropout_key, state.step)

  def loss_fn(params):
    logits = model.apply({'params': params}, batch['image'], train=True,
                         rngs={'dropout': step_key})
    sums = metrics.classification_sums(logits, batch['label'])
    return sums['loss'] / sums['count'], sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  opt_state = state.opt_state
  opt_state.hyperparams['learning_rate'] = learning_rate
  finite = jnp.isfinite(sums['loss']) & _all_finite(grads)

  def update(params, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = jax.lax.cond(finite, update, lambda *unchanged: unchanged, state.params,
                                   opt_state)
  sums = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
  sums['nonfinite_steps'] = 1 - finite.astype(jnp.int32)
  sums['first_nonfinite_step'] = jnp.where(finite, NO_NONFINITE_STEP, state.step + 1)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), sums


NO_NONFINITE_STEP = np.iinfo(np.int32).max


def _all_finite(tree: Any) -> jax.Array:
  """True (a scalar) when every entry of every leaf is finite."""
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


_params_finite = jax.jit(_all_finite)


def accumulate(total: dict[str, jax.Array] | None,
               step_sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Adds one step's metric sums to the running ones; keeps the first non-finite step."""
  if total is None:
    return step_sums
  return {name: (jnp.minimum if name == 'first_nonfinite_step' else jnp.add)(total[name], value)
          for name, value in step_sums.items()}


def eval_step(params: Any, batch: dict[str, jax.Array], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Metric sums of one evaluation batch; images may carry a crop axis [B, crops, H, W, C]."""
  images = batch['image']
  if images.ndim == 5:
    b, crops = images.shape[:2]
    logits = model.apply({'params': params}, images.reshape((b * crops,) + images.shape[2:]))
    logits = logits.reshape(b, crops, -1)
  else:
    logits = model.apply({'params': params}, images)
  return metrics.classification_sums(logits, batch['label'], batch['mask'])


def evaluate(eval_fn: Callable, params: Any, batches: Iterator[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, max_steps: int = -1) -> dict[str, float]:
  totals = None
  for i, batch in enumerate(batches):
    if i == max_steps:
      break
    sums = eval_fn(params, parallel.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise UserError('the evaluation split produced no batches; check config.eval_batch_size.')
  return jax.device_get(totals)


def create_step_fns(model: nn.Module, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                    strategy: str, shardings: TrainState) -> tuple[Callable, Callable]:
  """The jitted train and eval steps for the state laid out as `shardings` on `mesh`."""
  distributed = parallel.DistributedModel(model, mesh, strategy)
  p_train_step = jax.jit(
      lambda s, b, lr, k: train_step(s, b, lr, k, model=distributed, tx=tx),
      in_shardings=(shardings, parallel.batch_sharding(mesh), None, None),
      out_shardings=(shardings, None), donate_argnums=0)
  p_eval_step = jax.jit(lambda p, b: eval_step(p, b, model=distributed),
                        in_shardings=(shardings.params, parallel.batch_sharding(mesh)))
  return p_train_step, p_eval_step


class NanPolicy:
  """config.nan_policy for the non-finite steps the train step reports (it never applies them)."""

  def __init__(self, policy: str, ckpt: checkpoint.Checkpointer):
    self.policy, self._ckpt = policy, ckpt

  def check(self, sums: dict[str, Any]) -> int:
    """Non-finite steps in host `sums`; with policy 'stop' any such step raises UserError."""
    count = int(sums['nonfinite_steps'])
    if count and self.policy == 'stop':
      raise UserError(
          f'non-finite loss or gradients at step {int(sums["first_nonfinite_step"])}; training '
          f'stopped without applying it ({self._intact()}). Lower config.learning_rate, set '
          "config.grad_clip_norm, or set config.nan_policy='skip' to skip such steps.")
    return count

  def check_params(self, params: Any, step: int) -> None:
    """UserError, whatever the policy, if `params` (after `step`) are not finite: an update from
    finite gradients overflowed float32. Such a step is applied (the guard is decided before the
    update), so the loop calls this before every save and evaluation, and when it reports
    non-finite steps (every step after an overflow is one)."""
    if not bool(_params_finite(params)):
      raise UserError(
          f'the parameters are not finite at step {step}: an update from finite gradients '
          f'overflowed float32 (at this step or since the last check); training stopped without '
          f'saving them ({self._intact()}). Lower config.learning_rate or set '
          'config.grad_clip_norm.')

  def _intact(self) -> str:
    self._ckpt.wait_until_finished()  # A save in flight holds a finite state: let it complete.
    newest = self._ckpt.latest_step()
    return (f'the newest checkpoint, {"none" if newest is None else f"step {newest}"} in '
            f'{self._ckpt.directory}, is intact')


NONFINITE_KEYS = ('nonfinite_steps', 'first_nonfinite_step')


class ProgressReport:
  """Once per log interval: the training row (metrics.jsonl, TensorBoard) and the console line.

  The line: step n/N, loss, top-1 error, learning rate, images/s and ETA; the row adds the
  corrupt-image counts of the input pipeline and, with nan_policy 'skip', the skipped steps.
  Images/s and the ETA count training time only: evaluations run inside `paused()`. (clu's
  periodic_actions.ReportProgress reports steps/s including evaluations, through work-unit
  notes, and carries no loss or learning rate.)
  """

  def __init__(self, writer: metrics.MetricWriter, dataset: data.Dataset, nan_policy: NanPolicy,
               batch_size: int, start_step: int, total_steps: int,
               clock: Callable[[], float] = time.perf_counter):
    self._writer, self._dataset, self._nan_policy = writer, dataset, nan_policy
    self._batch_size, self._total_steps, self._clock = batch_size, total_steps, clock
    self._interval_start, self._interval_step = clock(), start_step

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside does not count as training time."""
    paused_at = self._clock()
    try:
      yield
    finally:
      self._interval_start += self._clock() - paused_at

  def __call__(self, step: int, sums: dict[str, Any], learning_rate: float) -> dict[str, float]:
    """Reports the interval ending at `step` and returns its row; `sums`: its accumulated host
    metric sums."""
    skipped = self._nan_policy.check(sums)
    scalars = metrics.means({k: v for k, v in sums.items() if k not in NONFINITE_KEYS},
                            'train') if sums['count'] else {}
    if self._nan_policy.policy == 'skip':
      scalars['train/skipped_steps'] = skipped
      if skipped:
        logging.warning('Skipped %d step(s) with non-finite loss or gradients in '
                        'steps %d-%d (the first: step %d).', skipped, self._interval_step + 1,
                        step, sums['first_nonfinite_step'])
    elapsed = self._clock() - self._interval_start
    images_per_sec = (step - self._interval_step) * self._batch_size / elapsed
    scalars.update({'train/learning_rate': float(learning_rate),
                    'train/images_per_sec': images_per_sec})
    # Undecodable images so far (this process): replaced in training, masked in evaluation.
    scalars.update({f'input/corrupt_images_{name}': count
                    for name, count in self._dataset.corrupt_image_counts().items()})
    self._writer.write_scalars(step, scalars)
    eta = (self._total_steps - step) * elapsed / (step - self._interval_step)
    logging.info('step %d/%d | loss %.4f | top1_err %.4f | lr %.5g | %.0f img/s | ETA %s',
                 step, self._total_steps, scalars.get('train/loss', math.nan),
                 scalars.get('train/top1_error', math.nan), learning_rate, images_per_sec,
                 format_duration(eta))
    self._interval_start, self._interval_step = self._clock(), step
    return scalars


def format_duration(seconds: float) -> str:
  """'1h05m' from an hour on, '4m07s' below."""
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


@dataclasses.dataclass
class Evaluator:
  """Evaluates the parameters on each of the data set's evaluations, records and logs the means.

  Each result feeds the plateau controller. A signal abandons the evaluation (on ImageNet it
  outlasts a preemption's grace period): then nothing is recorded and the call returns None.
  """
  dataset: data.Dataset
  eval_fn: Callable
  mesh: jax.sharding.Mesh
  max_steps: int
  writer: metrics.MetricWriter
  plateau: optim.Plateau
  lr_schedule: str

  def __call__(self, params: Any, step: int,
               stop: preemption.StopRequest) -> dict[str, float] | None:
    results = {}
    for name, batches in self.dataset.eval_batches.items():
      sums = evaluate(self.eval_fn, params, _until_signal(batches(), stop), self.mesh,
                      self.max_steps)
      if stop.received:
        return None
      results.update(metrics.means(sums, f'eval_{name}' if name else 'eval'))
    self.writer.write_scalars(step, results)
    if self.plateau.update(results['eval/top1_error']) and self.lr_schedule == 'plateau':
      logging.info('Validation error stopped improving: learning rate divided by 10 (x%g).',
                   self.plateau.factor)
    logging.info('eval step %d: %s', step, ', '.join(f'{k}={v:.4f}' for k, v in results.items()))
    return results


def reached_train_error(scalars: dict[str, float], target: float, step: int) -> bool:
  """Whether a logging interval's running training top-1 error is at or below `target` (> 0;
  0 turns the early stop off). Fig. 1 measures only when the error gets there."""
  reached = target > 0 and scalars.get('train/top1_error', math.inf) <= target
  if reached:
    logging.info('Training error %.4f reached config.stop_at_train_error=%g at step %d: '
                 'stopping.', scalars['train/top1_error'], target, step)
  return reached


def _until_signal(batches: Iterator[Any], stop: preemption.StopRequest) -> Iterator[Any]:
  for batch in batches:
    yield batch
    if stop.received:
      return


def save_checkpoint(ckpt: checkpoint.Checkpointer, state: TrainState, position: data.Position,
                    plateau: optim.Plateau, step_batch_size: int,
                    pending_eval: bool = False) -> None:
  """Starts saving `state` at `position`, with what the trainer needs to resume exactly."""
  ckpt.save(position.step, state, dataclasses.asdict(position),
            {'plateau': plateau.to_json(), 'pending_eval': pending_eval,
             'step_batch_size': step_batch_size})


def _due(step: int, every: int, last: int) -> bool:
  return step % every == 0 or step == last


def _mesh(config: ml_collections.ConfigDict) -> tuple[jax.sharding.Mesh, str]:
  """The device mesh and parallel strategy; UserError if a batch does not divide over it."""
  mesh = parallel.create_mesh(config.mesh, config.model.get('towers', 1))
  strategy = parallel.strategy_of(config.mesh)
  parallel.check_batch_size(config.batch_size, mesh, 'batch_size', strategy)
  parallel.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size', strategy)
  return mesh, strategy


def _training_data(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   dataset: data.Dataset | None) -> data.Dataset:
  if dataset is None:  # Each process feeds its own part of the batch.
    dataset = data.create_dataset(config, *parallel.process_batch_shard(mesh))
  if dataset.num_train_examples < config.batch_size:
    raise UserError(f'the training split has {dataset.num_train_examples} examples, fewer than '
                    f'config.batch_size={config.batch_size}; lower the batch size.')
  return dataset


def _start(config: ml_collections.ConfigDict, run: Workdir, ckpt: checkpoint.Checkpointer,
           model: nn.Module, tx: optax.GradientTransformation, init_key: jax.Array,
           mesh: jax.sharding.Mesh, strategy: str,
           dataset: data.Dataset) -> tuple[resume.Start, TrainState]:
  """(where training starts, the shardings of the train state)."""
  init = lambda key, lr: create_train_state(model, tx, key, dataset.image_shape, lr)
  learning_rate = np.float32(config.learning_rate)  # As tx.init types it (see create_train_state).
  abstract_state = jax.eval_shape(init, init_key, learning_rate)
  shardings = parallel.state_shardings(mesh, abstract_state, model, strategy)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
  fresh = lambda: jax.jit(init, out_shardings=shardings)(init_key, learning_rate)
  return (resume.restore(config, run, ckpt, abstract, fresh, tx.init, dataset.epoch_size),
          shardings)


def _open_records(config: ml_collections.ConfigDict, run: Workdir,
                  start: resume.Start) -> metrics.MetricWriter:
  """The metric writer; on process 0, the config record (config.json or a history line)."""
  writer = metrics.create_writer(run.path, jax.process_index() == 0)
  if jax.process_index() == 0:
    if start.resumed_from is None or not start.config_recorded:
      run.write_config(config)
    else:
      run.record_resume(start.resumed_from, start.changes)
    if start.position.step == 0:
      writer.write_hparams({k: v for k, v in config.items() if isinstance(v, (int, float, str))})
  if start.summary:
    logging.info('%s.', start.summary)
  return writer


def _finish(writer: metrics.MetricWriter, ckpt: checkpoint.Checkpointer,
            stop: preemption.StopRequest, step: int) -> None:
  """Waits for the last writes and closes the writers (an in-process sweep runs many); after a
  signal, says where the checkpoint is."""
  writer.close()
  ckpt.wait_until_finished()
  if stop.received:
    logging.info('Stopped by %s after step %d; the checkpoint is in %s. Run the same command to '
                 'resume.', stop.signal_name, step, os.path.join(ckpt.directory, str(step)))
  ckpt.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: data.Dataset | None = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final state.

  `dataset` defaults to the one `config.dataset` names (tests pass small or altered ones).
  """
  config_checks.validate(config)
  run = Workdir(workdir)
  run.check_writable()
  mesh, strategy = _mesh(config)
  dataset = _training_data(config, mesh, dataset)
  model = registry.create_model(config.model, dataset.num_classes,
                                parallel.Layout(kernels=config.kernels))
  tx = optim.create_optimizer(config)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  ckpt = checkpoint.Checkpointer(workdir, config.max_checkpoints_to_keep)
  start, shardings = _start(config, run, ckpt, model, tx, init_key, mesh, strategy, dataset)
  state, position, plateau = start.state, start.position, start.plateau
  length = optim.TrainingLength.from_config(config, dataset.epoch_size, start.step_batch_size)
  total_steps = position.step + length.steps_left(position.examples, config.batch_size)
  writer = _open_records(config, run, start)
  logging.info('Training %s to step %d: %d steps of batch %d from step %d (%d of %d examples '
               'seen).', config.dataset, total_steps, total_steps - position.step,
               config.batch_size, position.step, position.examples, length.total_examples)

  p_train_step, p_eval_step = create_step_fns(model, tx, mesh, strategy, shardings)
  learning_rate = optim.LearningRate(config, plateau, length)
  evaluate_and_record = Evaluator(dataset, p_eval_step, mesh, config.num_eval_steps, writer,
                                  plateau, config.lr_schedule)
  nan_policy = NanPolicy(config.nan_policy, ckpt)
  report = ProgressReport(writer, dataset, nan_policy, config.batch_size, position.step,
                          total_steps)
  stop = preemption.STOP  # Set by SIGTERM/SIGINT while run.py (or a caller) has it entered.
  with report.paused():
    if start.pending_eval and evaluate_and_record(state.params, position.step, stop) is None:
      total_steps = position.step  # Interrupted again: the checkpoint still asks for it.
  batches, sums = dataset.train_batches(position), None
  while position.step < total_steps:
    lr = learning_rate(position.examples)
    batch = parallel.global_batch(next(batches), mesh)
    state, step_sums = p_train_step(state, batch, lr, dropout_key)
    position = position.after_batch(config.batch_size, dataset.epoch_size)
    sums = accumulate(sums, step_sums)
    reached_target = False
    if _due(position.step, config.log_every_steps, total_steps):
      host_sums = jax.device_get(sums)
      if host_sums['nonfinite_steps']:  # After an overflowed update every step is non-finite.
        nan_policy.check_params(state.params, position.step)
      reached_target = reached_train_error(report(position.step, host_sums, lr),
                                           config.stop_at_train_error, position.step)
      sums = None
    eval_interrupted = False
    if _due(position.step, config.eval_every_steps, total_steps) or reached_target:
      nan_policy.check_params(state.params, position.step)
      with report.paused():
        eval_interrupted = evaluate_and_record(state.params, position.step, stop) is None
    stopping = stop.reached(position.step) or reached_target
    if _due(position.step, config.checkpoint_every_steps, total_steps) or stopping:
      nan_policy.check_params(state.params, position.step)
      if sums is not None:
        nan_policy.check(jax.device_get(sums))  # Never save past a step 'stop' rejects.
      writer.flush()  # The metrics rows up to a checkpoint are on disk with it.
      save_checkpoint(ckpt, state, position, plateau, length.step_batch_size, eval_interrupted)
    if stopping:
      break
  _finish(writer, ckpt, stop, position.step)
  return state
