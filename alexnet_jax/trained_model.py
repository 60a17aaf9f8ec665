"""Loads a trained model for inference: its config, module and parameters from a workdir.

A workdir written by `run.py` (or by `alexnet_jax.convert`) holds `config.json` and
`checkpoints/<step>/`. Every command that uses a trained model (predict, features, figures,
ensemble, fine-tuning) goes through `load`, so they all accept the same two forms:
`--workdir=DIR` (latest step) or `--checkpoint=DIR/checkpoints/STEP` (that step).
"""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import checkpoint, data, registry
from alexnet_jax.errors import UserError
from alexnet_jax.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  class_names: tuple[str, ...]  # As printed: ImageNet's "tabby (n02123045)", not the bare ID.
  image_shape: tuple[int, int, int]  # (H, W, C) the model takes.
  step: int


def load_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The config of `workdir`'s checkpoint `step` (None: the latest), changes on resume included."""
  return Workdir(workdir).config(step)


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The data set's label names (TFDS metadata; ImageNet's WordNet IDs with an English name,
  `data.readable_class_names`), restricted to `config.input.classes` if set."""
  names = data.readable_class_names(config, _builder_info(config).features['label'].names)
  classes = config.input.get('classes')
  return tuple(names[c] for c in classes) if classes else names


def _builder_info(config: ml_collections.ConfigDict) -> Any:
  """The data set's tfds.core.DatasetInfo. The metadata ships with TFDS: no prepared data is
  needed to read it. TensorFlow is imported here, not with the module: a tool's --help and its
  mistakes (a missing workdir) are answered without it (3-4 s)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.builder(data.entry(config).tfds_name, data_dir=config.get('data_dir')).info


def abstract_params(model: nn.Module, shape: tuple[int, int, int]) -> Any:
  return jax.eval_shape(lambda: model.init(jax.random.key(0),
                                           jnp.zeros((1,) + tuple(shape)))['params'])


def split_checkpoint_path(path: str) -> tuple[str, int | None]:
  """`DIR/checkpoints/STEP` -> (`DIR`, STEP); a workdir -> (workdir, None: the latest step)."""
  path = os.path.abspath(path.rstrip('/'))
  parent, leaf = os.path.split(path)
  if leaf.isdigit() and os.path.basename(parent) == 'checkpoints':
    return os.path.dirname(parent), int(leaf)
  if leaf == 'checkpoints':
    return parent, None
  return path, None


def load(workdir: str | None = None, checkpoint_path: str | None = None) -> TrainedModel:
  """The model of `workdir`'s latest checkpoint, or of `checkpoint_path` (a step directory)."""
  if bool(workdir) == bool(checkpoint_path):
    raise UserError('pass exactly one of --workdir=DIR or --checkpoint=DIR/checkpoints/STEP.')
  workdir, step = split_checkpoint_path(workdir or checkpoint_path)
  load_config(workdir)  # A workdir without a config fails here, with the clearer message.
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  if step is None:
    step = checkpoint.latest_step(checkpoint_dir)
  from alexnet_jax.data import convention  # pylint: disable=import-outside-toplevel  (TensorFlow)
  config = convention.resolve_paths(load_config(workdir, step), workdir)  # The workdir's mean file.
  names = class_names(config)
  model = registry.create_model(config.model, len(names))
  shape = data.image_shape(config)
  params = checkpoint.restore_params(checkpoint_dir, abstract_params(model, shape), step)
  return TrainedModel(config, model, params, names, shape, step)
