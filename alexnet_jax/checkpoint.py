"""Orbax checkpoints of the train state, the input position and the trainer's host-side state.

All Orbax calls live here so that an Orbax API change stays in one file. A checkpoint holds three
items: 'state' (params, optimizer state, step), 'input' (the data-iterator position) and 'trainer'
(JSON: learning-rate plateau bookkeeping). Orbax commits a step atomically, so a run killed while
saving never leaves a half-written step behind as the latest one.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import UserError


class Checkpointer:
  """Periodic saves into `<workdir>/checkpoints` and restore of the latest complete step."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'input': ocp.JsonCheckpointHandler(),
                       'trainer': ocp.JsonCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, input_position: dict[str, int],
           trainer_state: dict[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        input=ocp.args.JsonSave(input_position),
        trainer=ocp.args.JsonSave(trainer_state)), force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, int], dict[str, Any]]:
    """Restores `step` into the shapes and shardings of `abstract_state`."""
    self._check_shapes(step, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        input=ocp.args.JsonRestore(),
        trainer=ocp.args.JsonRestore()))
    return restored['state'], restored['input'], restored['trainer']

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    saved = self._manager.item_metadata(step)['state']
    saved = getattr(saved, 'tree', saved)  # Orbax wraps the metadata tree in newer versions.
    saved_params = dict(_flatten(saved.get('params', {})))
    expected = dict(_flatten(abstract_state.params))
    for name in sorted(set(saved_params) | set(expected)):
      saved_shape = getattr(saved_params.get(name), 'shape', None)
      expected_shape = getattr(expected.get(name), 'shape', None)
      if saved_shape is None or expected_shape is None or tuple(saved_shape) != tuple(
          expected_shape):
        raise UserError(
            f'{self.directory} holds a checkpoint of a different model (parameter {name}: '
            f'saved {_shape_str(saved_shape)}, this config {_shape_str(expected_shape)}); '
            'use a new --workdir or the config that wrote it.')

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


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
  """
  step = latest_step(checkpoint_dir) if step is None else step
  path = os.path.join(os.path.abspath(checkpoint_dir), str(step), 'state')
  if not os.path.isdir(path):
    raise UserError(f'no checkpoint of step {step} in {checkpoint_dir}; pass the right '
                    '--workdir/--checkpoint.')
  checkpointer = ocp.PyTreeCheckpointer()
  saved = checkpointer.metadata(path)
  saved = getattr(saved, 'item_metadata', saved)  # Orbax wraps the tree in newer versions.
  saved = getattr(saved, 'tree', saved)
  _check_same_params(checkpoint_dir, saved.get('params', {}), abstract_params)
  target = {'params': abstract_params}
  restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return restored['params']


def _check_same_params(directory: str, saved_params: Any, expected_params: Any) -> None:
  saved, expected = dict(_flatten(saved_params)), dict(_flatten(expected_params))
  for name in sorted(set(saved) | set(expected)):
    saved_shape = getattr(saved.get(name), 'shape', None)
    expected_shape = getattr(expected.get(name), 'shape', None)
    if saved_shape is None or expected_shape is None or tuple(saved_shape) != tuple(
        expected_shape):
      raise UserError(
          f'{directory} holds a checkpoint of a different model (parameter {name}: '
          f'saved {_shape_str(saved_shape)}, this config {_shape_str(expected_shape)}); '
          'use a new --workdir or the config that wrote it.')


def _flatten(tree: Any) -> list[tuple[str, Any]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [('/'.join(str(getattr(k, 'key', k)) for k in path), leaf) for path, leaf in leaves]


def _shape_str(shape) -> str:
  return 'nothing' if shape is None else 'x'.join(map(str, shape)) or 'scalar'


def restore_params(path: str) -> Any:
  """The params of a saved train state, without knowing the model: for reports on checkpoints.

  `path` is a workdir, its `checkpoints` directory (the latest step is read) or one step's
  directory. Nothing is created or changed on disk.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if not os.path.isdir(path):
    raise UserError(f'{path} is not a directory; pass a workdir or a checkpoint directory.')
  if os.path.isdir(os.path.join(path, 'state')):  # One step's directory.
    state = ocp.StandardCheckpointer().restore(os.path.join(path, 'state'))
  else:
    manager = ocp.CheckpointManager(path, item_handlers={'state': ocp.StandardCheckpointHandler()})
    step = manager.latest_step()
    if step is None:
      raise UserError(f'no checkpoint found under {path}.')
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
        'state']
    manager.close()
  params = state.get('params') if isinstance(state, dict) else getattr(state, 'params', None)
  if params is None:
    raise UserError(f'the checkpoint under {path} holds no state.params.')
  return params
