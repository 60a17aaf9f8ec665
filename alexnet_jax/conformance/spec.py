"""A source's network as the specification the report compares a model with.

`reference_spec(name)` turns the facts of `alexnet_jax.recipes.RECIPES[name]` (widths, towers,
LRN, pooling, dropout, init scheme; each cited there) into per-layer expectations. The geometry
every source shares (kernels 11/5/3/3/3, strides 4/1/1/1/1, paddings of conv2-5) is the paper's:
docs/paper.md, Architecture (§3.5, Fig. 2). An init scheme's numbers and the constants of
cuda-convnet2's same-map normalization are models.py's tables, cited there.
"""

import dataclasses
from typing import Any

from alexnet_jax import models, recipes

# The facts the model rows measure (every other fact is a config key, `training.config_rows`).
MODEL_FACTS = (
    'input.image_size', 'model.towers', 'model.conv_features', 'model.fc_features',
    'model.num_classes', 'model.activation', 'model.lrn', 'model.lrn_scope', 'model.lrn_n',
    'model.lrn_alpha', 'model.lrn_alpha_divided_by_n', 'model.lrn_beta', 'model.lrn_k',
    'model.conv1_relu_after_pool', 'model.conv2_rnorm', 'model.conv1_padding', 'model.pooling',
    'model.dropout_rate', 'model.dropout_placement', 'model.weight_init')
ILSVRC_CLASSES = 1000  # Every source trains on ILSVRC (docs/paper.md, Data (§2)).
RNORM = {'size': models.RNORM_SIZE, 'scale': models.RNORM_SCALE, 'pow': models.RNORM_POW,
         'min_div': models.RNORM_MIN_DIV}

# (kernel, stride, padding) of conv2-conv5; conv1 is 11x11 stride 4 with the source's padding.
_CONV_GEOMETRY = {'conv2': (5, 1, 2), 'conv3': (3, 1, 1), 'conv4': (3, 1, 1), 'conv5': (3, 1, 1)}
_POOLED = ('conv1', 'conv2', 'conv5')
_OWN_TOWER = ('conv2', 'conv4', 'conv5')  # Read only their own tower's maps (§3.2).
_POOLINGS = {'overlapping': (3, 2), 'non_overlapping': (2, 2)}  # (window, stride), §3.4.


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  name: str
  features: int  # Kernels (conv) or units (fc), total over the towers.
  split: int  # Towers the kernels are split over (1: one set, e.g. fc8's summed partial products).
  sees: str  # 'all': every input channel; 'own': its own tower's channels only.
  kernel: int = 0  # 0 for fully connected layers.
  stride: int = 0
  padding: int = 0
  activation: str = 'relu'
  lrn: bool = False
  pool: tuple[int, int] | None = None  # (window, stride) of the max-pool after the layer.
  dropout_on_input: float = 0.0

  @property
  def is_conv(self) -> bool:
    return self.kernel > 0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What one source says the network is."""
  name: str  # 'paper', 'caffe', ...: a key of recipes.RECIPES.
  input_shape: tuple[int, int, int]
  layers: tuple[LayerSpec, ...]
  lrn: dict[str, Any]  # k, n, beta, alpha (as written), alpha_divided_by_n, scope.
  lrn_sees_signed: tuple[str, ...]  # Layers whose LRN reads responses before their ReLU.
  same_map_norm: dict[str, dict[str, float]]  # Layer -> cuda-convnet2 rnorm constants.
  init: dict[str, tuple[Any, Any]]  # Layer -> (weight, bias), as models.WEIGHT_INITS.
  facts: dict[str, recipes.Fact]  # The source's facts by config key, for values and citations.
  gaps: tuple[recipes.Fact, ...]  # What the source does that no config key expresses.

  @property
  def title(self) -> str:
    return 'the paper' if self.name == 'paper' else self.name

  @property
  def lrn_alpha_on_sum(self) -> float:
    """The alpha that multiplies the plain sum of squares."""
    alpha = self.lrn['alpha']
    return alpha / self.lrn['n'] if self.lrn['alpha_divided_by_n'] else alpha

  def source(self, key: str) -> recipes.Fact | None:
    return self.facts.get(key)


def _layers(v: dict[str, Any]) -> tuple[LayerSpec, ...]:
  towers, lrn = v['model.towers'], v['model.lrn']
  pool = _POOLINGS[v['model.pooling']]
  rate, before = v['model.dropout_rate'], v['model.dropout_placement'] == 'before'
  layers = []
  for i, features in enumerate(v['model.conv_features']):
    name = f'conv{i + 1}'
    kernel, stride, padding = _CONV_GEOMETRY.get(name, (11, 4, v['model.conv1_padding']))
    sees = 'own' if name in _OWN_TOWER and towers > 1 else 'all'
    layers.append(LayerSpec(name, features, towers, sees, kernel, stride, padding,
                            v['model.activation'], lrn and name in ('conv1', 'conv2'),
                            pool if name in _POOLED else None))
  for name, features, dropout in (('fc6', v['model.fc_features'][0], before),
                                  ('fc7', v['model.fc_features'][1], True),
                                  ('fc8', v['model.num_classes'], not before)):
    layers.append(LayerSpec(name, features, towers if name != 'fc8' else 1, 'all',
                            activation=v['model.activation'] if name != 'fc8' else 'none',
                            dropout_on_input=rate if dropout else 0.0))
  return tuple(layers)


def model_spec(recipe: recipes.Recipe) -> ModelSpec:
  """The network `recipe` (one of recipes.RECIPES) describes."""
  facts = {f.key: f for f in recipe.checked}
  v = {key: f.value for key, f in facts.items()}
  v.setdefault('model.num_classes', ILSVRC_CLASSES)
  side = v['input.image_size']
  lrn = {key: v.get(f'model.lrn_{key}') for key in ('k', 'n', 'alpha', 'beta', 'scope')}
  lrn['alpha_divided_by_n'] = v.get('model.lrn_alpha_divided_by_n', False)
  return ModelSpec(recipe.name, (side, side, 3), _layers(v), lrn,
                   ('conv1',) if v.get('model.conv1_relu_after_pool') else (),
                   {'conv2': RNORM} if v.get('model.conv2_rnorm') else {},
                   dict(models.WEIGHT_INITS[v['model.weight_init']]), facts,
                   tuple(f for f in recipe.facts if f.key is None))


def reference_spec(name: str) -> ModelSpec:
  return model_spec(recipes.RECIPES[name])


PAPER = reference_spec('paper')
PAPER_INPUT = PAPER.input_shape
PAPER_LAYERS = PAPER.layers


def shapes(spec: ModelSpec) -> list[dict[str, Any]]:
  """Per layer: input channels per kernel, output side, pooled side, fan-in, params and
  multiply-adds: arithmetic on the spec, so the report can show the expected value of every row.
  """
  side, channels, per_tower = spec.input_shape[0], spec.input_shape[2], spec.input_shape[2]
  rows = []
  for layer in spec.layers:
    fan_in_channels = per_tower if layer.sees == 'own' else channels
    if layer.is_conv:
      side = (side + 2 * layer.padding - layer.kernel) // layer.stride + 1
      fan_in = layer.kernel * layer.kernel * fan_in_channels
      macs = side * side * layer.features * fan_in
      out_side = side
      if layer.pool:
        side = (side - layer.pool[0]) // layer.pool[1] + 1
    else:
      fan_in = channels * (side * side if side else 1)  # fc6 flattens the pooled maps.
      fan_in_channels, side, out_side = fan_in, 0, 0
      macs = layer.features * fan_in
    rows.append(dict(name=layer.name, fan_in_channels=fan_in_channels, side=out_side,
                     pooled_side=side, fan_in=fan_in, macs=macs,
                     params=layer.features * fan_in + layer.features))
    channels, per_tower = layer.features, layer.features // layer.split
  return rows


def paper_shapes() -> list[dict[str, Any]]:
  return shapes(PAPER)
