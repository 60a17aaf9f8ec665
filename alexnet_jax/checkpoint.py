"""Orbax checkpoints of the train state, the input position and the trainer's host-side state.

All Orbax calls live here so that an Orbax API change stays in one file. A checkpoint holds four
items: 'state' (params, optimizer state, step), 'input' (the data-iterator position), 'trainer'
(JSON: learning-rate plateau bookkeeping) and 'checksums' (one per state array, verified at restore).

Failure handling, in one place:
- Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it when complete, so a run
  killed while saving never leaves a half-written step that `latest_step()` would pick; leftover
  temporary directories are removed when the next run starts. Old steps are deleted only after a
  newer one is complete.
- Restore verifies every array against its saved checksum (Orbax's own checks miss most flipped
  bits in array data). An unreadable or mismatching step is reported in one line, moved to
  `<workdir>/checkpoints_unreadable/` and the next older step is used.
- A state saved in another layout than the one asked for (the optimizer's wrappers changed with
  the config, e.g. clipping turned on) is not damage: it is restored as saved, checked against
  its checksums just the same, and handed to the caller's `convert` (alexnet_jax.resume).
- A failed save (disk full, unwritable directory) is reported in one line and training goes on;
  the next checkpoint retries. After `MAX_CONSECUTIVE_FAILED_SAVES` failures in a row, or when the
  final save fails, a `UserError` stops training, naming the newest complete checkpoint.
"""

import contextlib
import gc
import glob
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from alexnet_jax import trees
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.errors import UserError

MAX_CONSECUTIVE_FAILED_SAVES = 3
# How long a failed save waits for Orbax's other item writers of that step before removing its
# temporary directory (they go on after the first failure and would write into it again).
WRITERS_TIMEOUT_SECONDS = 60.0


class Checkpointer:
  """Periodic saves into `<workdir>/checkpoints` and restore of the newest readable step."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    layout = workdir_lib.Workdir(workdir)
    self.directory = layout.checkpoints
    self.unreadable_directory = layout.unreadable_checkpoints
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'input': ocp.JsonCheckpointHandler(),
                       'trainer': ocp.JsonCheckpointHandler(),
                       'checksums': ocp.JsonCheckpointHandler()},
    )
    self._step_in_flight: int | None = None  # An asynchronous save not yet known to be complete.
    self._consecutive_failed_saves = 0
    self._failed_save_message: str | None = None  # Of the newest save, when it failed.

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, input_position: dict[str, int],
           trainer_state: dict[str, Any]) -> None:
    """Starts an asynchronous save of `step`; a failure is reported and retried at the next save."""
    self._finish_save_in_flight(final=False)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          input=ocp.args.JsonSave(input_position),
          trainer=ocp.args.JsonSave(trainer_state),
          checksums=ocp.args.JsonSave(state_checksums(state))), force=True)
      self._step_in_flight = step
    except Exception as e:  # pylint: disable=broad-except  # I/O errors come in many types.
      self._save_failed(step, e, final=False)

  def wait_until_finished(self) -> None:
    """Blocks until the last save is complete; raises UserError if it failed."""
    self._finish_save_in_flight(final=True)
    if self._failed_save_message:
      raise UserError(self._failed_save_message)

  def _finish_save_in_flight(self, final: bool) -> None:
    step, self._step_in_flight = self._step_in_flight, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(step, e, final)
    else:
      if step is not None:
        self._consecutive_failed_saves, self._failed_save_message = 0, None

  def _save_failed(self, step: int | None, error: Exception, final: bool) -> None:
    self._consecutive_failed_saves += 1
    # Free what the failed attempt wrote, so that the retry has the space; first let the item
    # writers still running end, or they would recreate files in it.
    _wait_for_orbax_writers(WRITERS_TIMEOUT_SECONDS)
    for partial in glob.glob(os.path.join(self.directory, f'{step}.orbax-checkpoint-tmp*')):
      shutil.rmtree(partial, ignore_errors=True)
    self._manager.reload()
    newest = self._manager.latest_step()
    message = (f'saving checkpoint step {step} in {self.directory} failed ({one_line(error)}); '
               'the newest complete checkpoint is '
               f'{"none" if newest is None else f"step {newest}"}.')
    self._failed_save_message = (
        f'{message} Free disk space or make --workdir writable, then rerun the same command: '
        'training resumes from the newest complete checkpoint.')
    if final or self._consecutive_failed_saves >= MAX_CONSECUTIVE_FAILED_SAVES:
      with contextlib.suppress(Exception):  # Let Orbax's writer threads end before we exit.
        self._manager.close()
      raise UserError(self._failed_save_message) from error
    logging.error('%s Training continues; the next checkpoint retries (%d of %d failures allowed '
                  'in a row).', message, self._consecutive_failed_saves,
                  MAX_CONSECUTIVE_FAILED_SAVES - 1)

  def restore_latest(self, abstract_state: Any, convert: Callable[[Any], Any] | None = None,
                     always_convert: bool = False
                     ) -> tuple[int, Any, dict[str, int], dict[str, Any]] | None:
    """(step, state, input position, trainer state) of the newest readable checkpoint, or None.

    Restores into the shapes and shardings of `abstract_state`. A state saved in another layout
    (or any state, with `always_convert`) is restored as saved, a nested dict of replicated
    arrays, and returned as `convert(saved)`; without `convert`, a checkpoint of another model
    raises UserError. Unreadable newer steps are moved aside once an older one restored.
    """
    unreadable = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      with _quiet_abandoned_reads():
        try:
          target = abstract_state
          if always_convert or not self._same_layout(step, abstract_state):
            if convert is None:
              self._check_shapes(step, abstract_state)
              raise UserError(f'checkpoint step {step} in {self.directory} holds another '
                              'optimizer state layout; resume it with the config that wrote it.')
            target = self._saved_layout(step, abstract_state)
          restored, problem = self._restore(step, target), None
        except UserError:
          raise
        except Exception as e:  # pylint: disable=broad-except  # Corruption shows in many types.
          problem = one_line(e)  # Not the exception: its frames would keep the reads alive.
      if problem:
        logging.warning('Checkpoint step %d in %s is unreadable (%s); trying an older one.',
                        step, self.directory, problem)
        unreadable.append(step)
        continue
      for bad_step in unreadable:
        self._move_aside(bad_step)
      state, input_position, trainer_state = restored
      if target is not abstract_state:
        state = convert(state)
      return step, state, input_position, trainer_state
    if unreadable:
      raise UserError(f'no checkpoint in {self.directory} is readable (steps '
                      f'{", ".join(map(str, unreadable))}); move that directory away to start '
                      'from scratch.')
    return None

  def _saved_state_metadata(self, step: int) -> Any:
    saved = self._manager.item_metadata(step)['state']
    return getattr(saved, 'tree', saved)  # Orbax wraps the metadata tree in newer versions.

  def _same_layout(self, step: int, abstract_state: Any) -> bool:
    """Whether the saved state has exactly the arrays (names, shapes, dtypes) of the target."""
    describe = lambda tree: {name: (tuple(leaf.shape), str(leaf.dtype))
                             for name, leaf in trees.flatten(tree)}
    return describe(self._saved_state_metadata(step)) == describe(abstract_state)

  def _saved_layout(self, step: int, abstract_state: Any) -> Any:
    """The saved state's own tree as restore target: each array replicated on the target's mesh."""
    some_sharding = getattr(jax.tree.leaves(abstract_state)[0], 'sharding', None)
    if isinstance(some_sharding, jax.sharding.NamedSharding):
      replicated = jax.sharding.NamedSharding(some_sharding.mesh, jax.sharding.PartitionSpec())
    else:  # An abstract state without shardings (tests): one device.
      replicated = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=replicated),
                        self._saved_state_metadata(step))

  def _restore(self, step: int, target: Any) -> tuple[Any, dict[str, int], dict[str, Any]]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        input=ocp.args.JsonRestore(),
        trainer=ocp.args.JsonRestore(),
        checksums=ocp.args.JsonRestore()))
    actual = state_checksums(restored['state'])
    for name, saved in restored['checksums'].items():
      if actual.get(name) != saved:
        raise ValueError(f'{name} does not match its saved checksum')
    return restored['state'], restored['input'], restored['trainer']

  def _move_aside(self, step: int) -> None:
    os.makedirs(self.unreadable_directory, exist_ok=True)
    destination = os.path.join(self.unreadable_directory, str(step))
    suffix = 1
    while os.path.exists(destination):
      destination, suffix = os.path.join(self.unreadable_directory, f'{step}.{suffix}'), suffix + 1
    shutil.move(os.path.join(self.directory, str(step)), destination)
    self._manager.reload()
    logging.warning('Moved unreadable checkpoint step %d to %s.', step, destination)

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    saved = self._saved_state_metadata(step)
    _check_same_params(self.directory, saved.get('params', {}), abstract_state.params)

  def close(self) -> None:
    self._manager.close()


def _wait_for_orbax_writers(timeout: float) -> None:
  """Joins Orbax's per-save writer threads (orbax.checkpoint's `_SignalingThread`, one per item
  write). Orbax reports a save's first failing write while the others still run; each of these
  threads ends when its write does. If Orbax renames the class, this waits for nothing (and
  tests/reliability_test.py's real failed save shows the leftover directory again)."""
  deadline = time.monotonic() + timeout
  for thread in threading.enumerate():
    if type(thread).__name__ == '_SignalingThread' and thread is not threading.current_thread():
      thread.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """Keeps a failed restore to its one-line report.

  Orbax leaves the read coroutines of a failed restore behind; Python prints each one's error as
  an 'Exception ignored' traceback when it is collected.
  """
  previous_hook = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous_hook


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Wrap-around sum of the array's bit patterns: any single flipped bit changes it."""
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  else:
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  return jnp.sum(bits, dtype=jnp.uint32)  # Integer sums: the same on any sharding.


_checksum_tree = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def state_checksums(state: Any) -> dict[str, int]:
  """{'params/conv1/kernel': checksum, ...} for every array of `state`."""
  sums = jax.device_get(_checksum_tree(state))
  return {name: int(value) for name, value in trees.flatten(sums)}


def one_line(error: BaseException) -> str:
  """'Type: first line of the message', short enough for a log line."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ''
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def latest_step(checkpoint_dir: str) -> int:
  """The newest complete step in a Checkpointer's directory."""
  step = None
  if os.path.isdir(checkpoint_dir):
    manager = ocp.CheckpointManager(checkpoint_dir,
                                    options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step()
    manager.close()
  if step is None:
    raise UserError(f'no checkpoint in {checkpoint_dir}; train first or pass the right --workdir.')
  return step


def restore_params(checkpoint_dir: str, abstract_params: Any, step: int | None = None) -> Any:
  """Only the parameters of `step` (default: the latest) in a Checkpointer's directory.

  A partial restore: the optimizer state is never read, so a checkpoint written with any optimizer
  (or a converted one) loads into a model for inference, feature extraction or fine-tuning.
  The params are verified against the step's saved checksums, as `Checkpointer` verifies them;
  a damaged step is a UserError naming it.
  """
  step = latest_step(checkpoint_dir) if step is None else step
  step_dir = os.path.join(os.path.abspath(checkpoint_dir), str(step))
  path = os.path.join(step_dir, 'state')
  if not os.path.isdir(path):
    raise UserError(f'no checkpoint of step {step} in {checkpoint_dir}; pass the right '
                    '--workdir/--checkpoint.')
  checkpointer = ocp.PyTreeCheckpointer()
  with _quiet_abandoned_reads():
    try:
      saved = checkpointer.metadata(path)
      saved = getattr(saved, 'item_metadata', saved)  # Orbax wraps the tree in newer versions.
      saved = getattr(saved, 'tree', saved)
      if saved is None:
        raise ValueError('no readable metadata')
      _check_same_params(checkpoint_dir, saved.get('params', {}), abstract_params)
      target = {'params': abstract_params}
      restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
      sums_dir = os.path.join(step_dir, 'checksums')
      if os.path.isdir(sums_dir):  # Absent only in checkpoints older than the checksums.
        saved_sums = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(sums_dir)
        for name, value in state_checksums(restored).items():
          if saved_sums.get(name) != value:
            raise ValueError(f'{name} does not match its saved checksum')
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # Corruption shows in many types.
      problem = one_line(e)  # Not the exception: its frames would keep the reads alive.
    else:
      return restored['params']
  raise UserError(f'checkpoint step {step} in {checkpoint_dir} is damaged ({problem}); pass '
                  '--checkpoint=DIR/checkpoints/STEP of another step, or train again.')


def _check_same_params(directory: str, saved_params: Any, expected_params: Any) -> None:
  trees.check_same_shapes(saved_params, expected_params, lambda name, saved, expected: (
      f'{directory} holds a checkpoint of a different model (parameter {name}: saved {saved}, '
      f'this config {expected}); use a new --workdir or the config that wrote it.'))


def read_params(path: str) -> Any:
  """The params of a saved train state, without knowing the model: for reports on checkpoints.

  `path` is a workdir, its `checkpoints` directory (the latest step is read) or one step's
  directory. Nothing is created or changed on disk.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if not os.path.isdir(path):
    raise UserError(f'{path} is not a directory; pass a workdir or a checkpoint directory.')
  problem = None
  with _quiet_abandoned_reads():
    try:
      if os.path.isdir(os.path.join(path, 'state')):  # One step's directory.
        state = ocp.StandardCheckpointer().restore(os.path.join(path, 'state'))
      else:
        manager = ocp.CheckpointManager(
            path, item_handlers={'state': ocp.StandardCheckpointHandler()})
        step = manager.latest_step()
        if step is None:
          raise UserError(f'no checkpoint found under {path}.')
        state = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))['state']
        manager.close()
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # Corruption shows in many types.
      problem = one_line(e)  # Not the exception: its frames would keep the reads alive.
  if problem:
    raise UserError(f'the checkpoint under {path} is damaged ({problem}); pass another step '
                    'directory, DIR/checkpoints/STEP.')
  params = state.get('params') if isinstance(state, dict) else getattr(state, 'params', None)
  if params is None:
    raise UserError(f'the checkpoint under {path} holds no state.params.')
  return params
