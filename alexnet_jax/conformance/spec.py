"""The paper's network as a specification the report compares a model with.

docs/paper.md, Architecture (§3.5, Fig. 2), LRN (§3.3), Dropout (§4.2) and Training (§5); the input
is 227x227 as Caffe uses (docs/paper.md, Input size: 224 or 227).
"""

import dataclasses
from typing import Any


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
  init_bias: float = 0.0

  @property
  def is_conv(self) -> bool:
    return self.kernel > 0


PAPER_INPUT = (227, 227, 3)
PAPER_LAYERS = (
    LayerSpec('conv1', 96, 2, 'all', 11, 4, 0, lrn=True, pool=(3, 2)),
    LayerSpec('conv2', 256, 2, 'own', 5, 1, 2, lrn=True, pool=(3, 2), init_bias=1.0),
    LayerSpec('conv3', 384, 2, 'all', 3, 1, 1),
    LayerSpec('conv4', 384, 2, 'own', 3, 1, 1, init_bias=1.0),
    LayerSpec('conv5', 256, 2, 'own', 3, 1, 1, pool=(3, 2), init_bias=1.0),
    LayerSpec('fc6', 4096, 2, 'all', init_bias=1.0),
    LayerSpec('fc7', 4096, 2, 'all', dropout_on_input=0.5, init_bias=1.0),
    LayerSpec('fc8', 1000, 1, 'all', activation='none', dropout_on_input=0.5),
)
PAPER_LRN = {'k': 2.0, 'n': 5, 'alpha': 1e-4, 'beta': 0.75}  # §3.3; the window stays in a tower.
PAPER_INIT_STD = 0.01  # §5: every weight ~ N(0, 0.01).


def paper_shapes() -> list[dict[str, Any]]:
  """Per layer: input channels per kernel, output side, pooled side, params and multiply-adds.

  Arithmetic on the table above, so the report can show the paper's value for every row.
  """
  side, channels, per_tower = PAPER_INPUT[0], PAPER_INPUT[2], PAPER_INPUT[2]
  rows = []
  for spec in PAPER_LAYERS:
    fan_in_channels = per_tower if spec.sees == 'own' else channels
    if spec.is_conv:
      side = (side + 2 * spec.padding - spec.kernel) // spec.stride + 1
      fan_in = spec.kernel * spec.kernel * fan_in_channels
      macs = side * side * spec.features * fan_in
      out_side = side
      if spec.pool:
        side = (side - spec.pool[0]) // spec.pool[1] + 1
    else:
      fan_in = channels * (side * side if side else 1)  # fc6 flattens the pooled maps.
      fan_in_channels, side, out_side = fan_in, 0, 0
      macs = spec.features * fan_in
    rows.append(dict(name=spec.name, fan_in_channels=fan_in_channels, side=out_side,
                     pooled_side=side, macs=macs, params=spec.features * fan_in + spec.features))
    channels, per_tower = spec.features, spec.features // spec.split
  return rows
