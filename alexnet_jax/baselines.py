"""Baselines beside AlexNet: the paper's Fig. 1 network and LeNet-5.

Like ``models.AlexNet``, every field is a config key (``config.model.<field>``) and the defaults
are the source's.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.models import ACTIVATIONS

Array = jax.Array


def _check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation={activation!r} is unknown; expected one of '
                     f'{", ".join(ACTIVATIONS)}.')


class SmallCNN(nn.Module):
  """The paper's Fig. 1 network: a four-layer CIFAR-10 CNN (three convolutions and a classifier).

  images [B, H, W, C] -> logits [B, num_classes] (float32). The paper does not list its layers;
  this follows cuda-convnet's CIFAR-10 net of that era (``layers-18pct``): 5x5 convolutions of 32,
  32 and 64 kernels, each followed by the activation and an overlapping 3/2 max-pool, then one
  dense layer. No normalization or dropout: Fig. 1 used no regularization of any kind.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 32, 64)  # Kernels of each 5x5 convolution.
  activation: str = 'relu'  # relu | tanh (Fig. 1 compares the two).
  dtype: Any = 'float32'

  conv_layers: ClassVar[tuple[str, ...]] = ('conv1', 'conv2', 'conv3')
  fc_layers: ClassVar[tuple[str, ...]] = ('fc',)
  feature_layer: ClassVar[str] = 'conv3'

  def __post_init__(self):
    _check_activation(self.activation)
    if not self.features or any(w <= 0 for w in self.features):
      raise ValueError(f'features={tuple(self.features)} must be positive widths.')
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    del train  # Nothing differs between training and evaluation.
    act, dtype = ACTIVATIONS[self.activation], jnp.dtype(self.dtype)
    x = images_BHWC.astype(dtype)
    for i, features in enumerate(self.features):
      x = nn.Conv(features, (5, 5), padding=2, dtype=dtype, name=f'conv{i + 1}')(x)
      # ceil-mode pooling (as cuda-convnet): 'SAME' keeps the border column of odd sizes.
      x = nn.max_pool(act(x), (3, 3), strides=(2, 2), padding='SAME')
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, dtype=dtype, name='fc')(x).astype(jnp.float32)

  def min_input_size(self) -> int:
    return 1  # 'SAME' pooling never empties a map.


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al., 1998), the baseline AlexNet is usually compared with.

  images [B, 32, 32, C] -> logits [B, num_classes] (float32). C1 6@5x5 -> S2 2x2 average pool ->
  C3 16@5x5 -> S4 2x2 average pool -> C5 120 -> F6 84 -> output. Two simplifications, as in most
  modern reimplementations: C3 sees all six S2 maps (the paper wires each C3 map to a subset), and
  S2/S4 are plain average pools (the paper's have a trainable scale and bias). On a 32x32 input C5
  is a 5x5 convolution over a 5x5 map, i.e. a dense layer.
  """
  num_classes: int = 10
  activation: str = 'tanh'  # tanh (LeCun et al. 1998) | relu.
  dtype: Any = 'float32'

  conv_layers: ClassVar[tuple[str, ...]] = ('conv1', 'conv2')
  fc_layers: ClassVar[tuple[str, ...]] = ('fc3', 'fc4', 'fc5')
  feature_layer: ClassVar[str] = 'fc4'

  def __post_init__(self):
    _check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    del train  # No dropout in LeNet-5.
    act, dtype = ACTIVATIONS[self.activation], jnp.dtype(self.dtype)
    pool = lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = images_BHWC.astype(dtype)
    x = pool(act(nn.Conv(6, (5, 5), padding='VALID', dtype=dtype, name='conv1')(x)))
    x = pool(act(nn.Conv(16, (5, 5), padding='VALID', dtype=dtype, name='conv2')(x)))
    x = x.reshape(x.shape[0], -1)
    x = act(nn.Dense(120, dtype=dtype, name='fc3')(x))
    x = act(nn.Dense(84, dtype=dtype, name='fc4')(x))
    return nn.Dense(self.num_classes, dtype=dtype, name='fc5')(x).astype(jnp.float32)

  def min_input_size(self) -> int:
    return 32  # The 5x5 C5 of the paper needs the 32x32 input (a larger one works too).
