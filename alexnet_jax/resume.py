"""Where training starts: from scratch, or from the workdir's latest checkpoint under a new config.

A resumed run's config is compared with the one in force when the checkpoint was written
(alexnet_jax.workdir keeps it). The changes fall in two kinds:

- **The model** (`MODEL_KEYS`: every `config.model` field but the computation-only ones, the
  data set, its classes and what the network's input is made of): the checkpoint belongs to
  another network, so resuming stops with one error naming the keys, unless
  `config.resume_with_changed_model` accepts the change: then parameters (and their momentum)
  whose shapes still fit are carried over and the others start fresh.
- **Everything else** (learning rate, schedule, clipping, optimizer, momentum, weight decay,
  frozen layers, batch size, number of steps, NaN policy, intervals, seed, mesh, kernels): the run
  resumes. Parameters, momentum, the plateau state and the data position are carried over.
  Where the optimizer state's layout changed (clipping on or off, layers frozen or thawed,
  paper_sgd <-> optax_sgd), the state is rebuilt for the new optimizer and the momentum mapped
  into it by parameter (optim.transfer_state); what could not be mapped starts fresh. Progress is
  counted in examples, so a new batch size continues with the examples not yet seen.

Either way one log line says what changed, what was carried over and what was reset.
"""

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from absl import logging

from alexnet_jax import checkpoint, data, finetune, optim, trees
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.errors import UserError

ACCEPT_MODEL_CHANGE = 'resume_with_changed_model'
# config.model fields that change how the network is computed, not what it computes.
COMPUTE_ONLY_MODEL_KEYS = ('model.dtype',)
# Outside config.model: what the network is trained to map to what (the data set, its classes,
# and how an image becomes the input: the size and the pixel normalisation).
INPUT_MODEL_KEYS = ('dataset', 'input.classes', 'input.image_size', 'input.resize',
                    'input.resize_size', 'input.channel_order', 'input.pixel_range',
                    'input.mean_subtraction', 'input.mean_values', 'input.mean_file',
                    'input.mean_num_images', 'input.std')


def model_keys(changes: dict[str, tuple[Any, Any]]) -> list[str]:
  """The changed keys that make the checkpoint another model's."""
  return [key for key in changes
          if (key.startswith('model.') and key not in COMPUTE_ONLY_MODEL_KEYS)
          or key in INPUT_MODEL_KEYS]


def check_model_unchanged(path: str, changes: dict[str, tuple[Any, Any]],
                          config: ml_collections.ConfigDict) -> None:
  """UserError naming the model keys that changed, unless the config accepts the change."""
  keys = model_keys(changes)
  if not keys or config.get(ACCEPT_MODEL_CHANGE, False):
    return
  listed = '; '.join(f'config.{key}: {_show(changes[key][0])} there, {_show(changes[key][1])} '
                     'here' for key in keys)
  raise UserError(
      f'{path} holds a checkpoint of a different model ({listed}); use a new --workdir or the '
      f'config that wrote it, or pass --config.{ACCEPT_MODEL_CHANGE}=True to resume anyway '
      '(parameters whose shapes still fit are kept, the others start fresh).')


@dataclasses.dataclass
class Start:
  """Where the training loop starts, and the one line that says how it got there."""
  state: Any  # train.TrainState, laid out on the mesh.
  position: data.Position
  plateau: optim.Plateau
  pending_eval: bool  # The evaluation at this step was interrupted by a signal: redo it first.
  step_batch_size: int  # The batch size that schedules and num_train_steps count steps of.
  changes: dict[str, tuple[Any, Any]]  # Config changes since the checkpoint ({} if fresh).
  resumed_from: int | None  # The checkpoint step; None for a start from scratch.
  config_recorded: bool  # The workdir holds a usable config record to append this run's changes to.
  summary: str  # The log line ('' for a start from scratch).


@dataclasses.dataclass
class _Mapping:
  """Fills a fresh state with what a checkpoint of another layout still fits (see `restore`)."""
  init: Callable[[], Any]
  scale: Callable[[Any], float | None]  # Momentum scale from the saved optimizer state.
  allow_model_change: bool
  directory: str
  optimizer: str
  carried: list[str] = dataclasses.field(default_factory=list)
  reset: list[str] = dataclasses.field(default_factory=list)
  used: bool = False

  def __call__(self, saved: dict[str, Any]) -> Any:
    self.used = True
    fresh = self.init()
    saved_params = dict(trees.flatten(saved['params']))
    kept, new_params = [], []

    def take(path, leaf):
      old = saved_params.get(trees.path_name(path))
      if old is not None and old.shape == leaf.shape and old.dtype == leaf.dtype:
        kept.append(trees.path_name(path))
        return old
      new_params.append(trees.path_name(path))
      return leaf

    params = jax.tree_util.tree_map_with_path(take, fresh.params)
    dropped = sorted(set(saved_params) - set(kept) - set(new_params))  # Layers now absent.
    if (new_params or dropped) and not self.allow_model_change:
      name = (new_params or dropped)[0]
      shapes = [getattr(saved_params.get(name), 'shape', None),
                getattr(dict(trees.flatten(fresh.params)).get(name), 'shape', None)]
      raise UserError(
          f'{self.directory} holds a checkpoint of a different model (parameter {name}: saved '
          f'{trees.shape_str(shapes[0])}, this config {trees.shape_str(shapes[1])}); '
          f'use a new --workdir or the config that wrote it, or pass '
          f'--config.{ACCEPT_MODEL_CHANGE}=True to start such parameters fresh.')
    scale = self.scale(saved['opt_state'])
    opt_state, moved = optim.transfer_state(saved['opt_state'], fresh.opt_state, scale,
                                            frozenset(new_params))
    self._describe(kept, new_params, dropped, scale, moved)
    state = fresh.replace(step=saved['step'], params=params, opt_state=opt_state)
    return jax.device_put(state, jax.tree.map(lambda x: x.sharding, fresh))

  def _describe(self, kept: list[str], new_params: list[str], dropped: list[str],
                scale: float | None, moved: optim.Transfer) -> None:
    params = kept + new_params
    self.carried.append(f'parameters of {_layers(kept, params)}' if new_params else 'parameters')
    if new_params or dropped:
      self.reset.append(f'parameters of {_layers(new_params + dropped, params + dropped)} '
                        '(shapes or layers changed)')
    momenta = moved.momentum_carried + moved.momentum_reset
    if moved.momentum_carried:
      which = f' of {_layers(moved.momentum_carried, momenta)}' if moved.momentum_reset else ''
      mapped = '' if scale == 1.0 else f' (mapped to {self.optimizer}: x{scale:.6g})'
      self.carried.append(f'momentum{which}{mapped}')
    if moved.momentum_reset:
      self.reset.append(f'momentum of {_layers(moved.momentum_reset, momenta)}')
    if moved.momentum_dropped:
      self.reset.append(f'momentum of {_layers(moved.momentum_dropped)} (not trained any more)')
    if moved.other_reset:
      self.reset.append(f'optimizer state {", ".join(moved.other_reset)}')


def restore(config: ml_collections.ConfigDict, run: workdir_lib.Workdir,
            ckpt: checkpoint.Checkpointer, abstract_state: Any, init: Callable[[], Any],
            tx_init: Callable[[Any], Any], epoch_size: int) -> Start:
  """The state to train from: the latest checkpoint's, carried across config changes, or fresh.

  `init()` makes a fresh state on the mesh, `tx_init(params)` a fresh optimizer state. Raises
  UserError for a change of model (see the module docstring) and for an unreadable workdir.
  """
  plateau = optim.Plateau.from_config(config)
  if ckpt.latest_step() is None:
    return Start(_initial_state(config, init, tx_init), data.Position(), plateau, False,
                 config.batch_size, {}, None, False, '')
  latest = ckpt.latest_step()
  # The config the checkpoint was written under (not the latest recorded one: a resume that saved
  # nothing since leaves a history line that does not describe this checkpoint).
  saved_config = run.saved_config(latest)
  changes = workdir_lib.differences(saved_config, config) if saved_config else {}
  check_model_unchanged(run.path, changes, config)
  saved_optimizer = changes.get('optimizer', (config.optimizer,))[0]
  mapping = _Mapping(init, lambda opt_state: optim.momentum_scale(
      saved_optimizer, config.optimizer, _saved_learning_rate(opt_state)),
                     bool(config.get(ACCEPT_MODEL_CHANGE, False)), ckpt.directory,
                     config.optimizer)
  restored = ckpt.restore_latest(abstract_state, convert=mapping,
                                 always_convert=bool(model_keys(changes)) or 'optimizer' in changes)
  if restored is None:  # Every step vanished since latest_step(): start afresh.
    return Start(_initial_state(config, init, tx_init), data.Position(), plateau, False,
                 config.batch_size, {}, None, False, '')
  step, state, input_position, trainer_state = restored
  if step != latest:  # Fell back past damaged checkpoints (now moved aside): compare with its own.
    return restore(config, run, ckpt, abstract_state, init, tx_init, epoch_size)
  plateau.load_json(trainer_state['plateau'])
  step_batch_size = int(trainer_state.get('step_batch_size') or
                        (saved_config.batch_size if saved_config else config.batch_size))
  if 'examples' in input_position:
    position = data.Position(**input_position)
  else:  # Written before positions counted examples: one batch size throughout.
    position = data.Position.at_step(input_position['step'], step_batch_size, epoch_size)
  if position.step != step:
    raise UserError(f'checkpoint {step} in {ckpt.directory} is inconsistent (input position '
                    f'{position.step}); delete that step directory.')
  carried = mapping.carried if mapping.used else ['parameters', 'optimizer state']
  carried = carried + ['plateau state', f'data position (epoch {position.epoch}, example '
                        f'{position.offset}; {position.examples} examples seen)']
  if 'batch_size' in changes:
    carried.append(f'progress in examples (num_train_steps and the schedule count steps of '
                   f'batch {step_batch_size})')
  summary = (f'Resumed from checkpoint step {step} in {ckpt.directory}' +
             (f'; config changes: {_changes_text(changes)}; carried over: {", ".join(carried)}; '
              f'reset: {", ".join(mapping.reset) or "nothing"}' if changes or mapping.used
              else ''))
  return Start(state, position, plateau, bool(trainer_state.get('pending_eval', False)),
               step_batch_size, changes, step, saved_config is not None, summary)


def _initial_state(config: ml_collections.ConfigDict, init: Callable[[], Any],
                   tx_init: Callable[[Any], Any]) -> Any:
  state = init()
  if config.get('finetune') and config.finetune.get('init_from'):
    params = finetune.pretrained_params(config, state.params)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    state = jax.device_put(state.replace(params=params, opt_state=tx_init(params)), shardings)
    logging.info('Initialised from %s (fresh: %s; frozen: %s).', config.finetune.init_from,
                 tuple(config.finetune.get('reinit') or ()), finetune.frozen_layers(config))
  return state


def _saved_learning_rate(opt_state: dict[str, Any]) -> float:
  """The learning rate of the last step before the checkpoint (optax.inject_hyperparams')."""
  return float(jax.device_get(opt_state['hyperparams']['learning_rate']))


def _layers(names: list[str], all_names: list[str] | None = None) -> str:
  """'conv1, fc8/bias': a layer's name where `names` holds all of its parameters in `all_names`."""
  all_names = names if all_names is None else all_names
  shown = []
  for name in names:
    layer = name.split('/')[0]
    whole = all(n in names for n in all_names if n.split('/')[0] == layer)
    shown.append(layer if whole else name)
  return ', '.join(dict.fromkeys(shown))


def _show(value: Any) -> str:
  """A config value as JSON (as config.json holds it); a missing key as <absent>."""
  return value if value == workdir_lib.ABSENT else json.dumps(value)


def _changes_text(changes: dict[str, tuple[Any, Any]]) -> str:
  return ', '.join(f'{key} {_show(old)} -> {_show(new)}' for key, (old, new) in changes.items()) \
      or 'none'
