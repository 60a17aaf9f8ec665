"""Baselines beside AlexNet: the paper's Fig. 1 network and LeNet-5.

Like ``models.AlexNet``, every field is a config key (``config.model.<field>``) and the defaults
are the source's.
"""

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.models import ACTIVATIONS, drawn_flat, normal
from alexnet_jax.parallel import Layout

Array = jax.Array


def _check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation={activation!r} is unknown; expected one of '
                     f'{", ".join(ACTIVATIONS)}.')


def lecun_normal(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
  """flax's default kernel init (lecun_normal: a normal truncated at 2 std, variance 1 / fan_in,
  fan_in every axis but the last), with its values, drawn flat and shaped (models.drawn_flat)."""
  stddev = jnp.sqrt(jnp.array(1.0 / math.prod(shape[:-1]), dtype)) / jnp.array(
      .87962566103423978, dtype)  # The std of a standard normal truncated to (-2, 2).
  return drawn_flat(lambda flat: jax.random.truncated_normal(key, -2, 2, flat, dtype),
                    shape) * stddev


# Weight std per layer: `initW` of cuda-convnet's layers-conv-local-13pct.cfg (biases 0, the
# parser's default); see SmallCNN.
CONV_LOCAL_INIT_STDS = {'conv1': 1e-4, 'conv2': 0.01, 'local3': 0.04, 'local4': 0.04, 'fc10': 0.01}


def ceil_max_pool(x: Array, window: int, stride: int, layout: Layout) -> Array:
  """Max-pool whose last window may overhang the map (cuda-convnet's `outputsX=0`): the output
  side is ceil((n - window) / stride) + 1, the overhang padded with -inf. 32 -> 16 -> 8 for 3/2."""
  def overhang(n: int) -> int:
    return (-(n - window)) % stride
  pad_h, pad_w = overhang(x.shape[1]), overhang(x.shape[2])
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
  return layout.max_pool(x, window, stride)


class Conv(nn.Module):
  """A stride-1 convolution with shared biases, computed by the layout's kernels; NHWC."""
  features: int
  kernel_size: int
  padding: int
  kernel_init: Callable = normal(0.01)
  dtype: Any = jnp.float32
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return self.layout.conv(x, kernel.astype(self.dtype), 1, self.padding) + bias.astype(self.dtype)


class LocallyConnected(nn.Module):
  """A 'local' layer: a convolution whose weights are not shared, one kernel per output position
  (cuda-convnet's `type=local`), stride 1, zero padding keeping the size; NHWC -> [B, H, W, F].

  kernel[i, j] ([k, k, C, F]) is the kernel of output position (i, j); biases are per position
  too, as cuda-convnet's (modules x filters of them).
  """
  features: int
  kernel_size: int  # Odd: the padding (kernel_size // 2) keeps the map's size.
  kernel_init: Callable = normal(0.01)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    _, height, width, channels = x.shape
    k, pad = self.kernel_size, self.kernel_size // 2
    kernel = self.param('kernel', self.kernel_init,
                        (height, width, k, k, channels, self.features)).astype(self.dtype)
    bias = self.param('bias', nn.initializers.zeros, (height, width, self.features))
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    y = bias.astype(self.dtype)
    # One position-wise product per kernel tap: 6.6x less CPU time per training step than one
    # product over extracted patches (lax.conv_general_dilated_patches), measured on 8x8x64 maps.
    for a in range(k):
      for b in range(k):
        y = y + jnp.einsum('bhwc,hwcf->bhwf', padded[:, a:a + height, b:b + width],
                           kernel[:, :, a, b])
    return y


class SmallCNN(nn.Module):
  """The paper's Fig. 1 network: a "four-layer" CIFAR-10 CNN; images [B, H, W, C] -> logits.

  The paper does not list its layers. It calls a CIFAR-10 net "four-layer" once more, in §3.3:
  13% test error without normalization and 11% with it (docs/paper.md, LRN (§3.3)), which are the
  results and names of Krizhevsky's cuda-convnet layer files layers-conv-local-13pct.cfg and
  layers-conv-local-11pct.cfg (the latter adds response normalization). This is the former, so
  "four layers" counts the hidden layers:

    conv1   64 kernels 5x5, stride 1, pad 2 -> activation -> max-pool 3/2   32x32 -> 16x16
    conv2   64 kernels 5x5, stride 1, pad 2 -> activation -> max-pool 3/2   16x16 -> 8x8
    local3  32 unshared 3x3 filters, pad 1 -> activation                     8x8
    local4  32 unshared 3x3 filters, pad 1 -> activation                     8x8
    fc10    dense -> logits

  Pools are ceil-mode, as cuda-convnet's. Weights ~ N(0, std) with the file's initW per layer
  (CONV_LOCAL_INIT_STDS), biases 0. The file trains on 24x24 crops; Fig. 1 used no regularization
  of any kind, so no crops here: the whole 32x32 image. No normalization or dropout.
  """
  num_classes: int = 10
  features: Sequence[int] = (64, 64, 32, 32)  # conv1, conv2, local3, local4.
  activation: str = 'relu'  # relu | tanh (Fig. 1 compares the two).
  dtype: Any = 'float32'
  layout: Layout = Layout()  # Which kernels compute the convolutions (not a config key).

  conv_layers: ClassVar[tuple[str, ...]] = ('conv1', 'conv2', 'local3', 'local4')
  fc_layers: ClassVar[tuple[str, ...]] = ('fc10',)
  feature_layer: ClassVar[str] = 'local4'

  def __post_init__(self):
    _check_activation(self.activation)
    if len(self.features) != 4 or any(w <= 0 for w in self.features):
      raise ValueError(f'features={tuple(self.features)} must be 4 positive widths (conv1, conv2, '
                       'local3, local4).')
    super().__post_init__()

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    del train  # Nothing differs between training and evaluation.
    act, dtype = ACTIVATIONS[self.activation], jnp.dtype(self.dtype)
    init = lambda layer: normal(CONV_LOCAL_INIT_STDS[layer])
    x = images_BHWC.astype(dtype)
    for name, features in (('conv1', self.features[0]), ('conv2', self.features[1])):
      x = Conv(features, 5, 2, init(name), dtype, self.layout, name=name)(x)
      x = ceil_max_pool(act(x), 3, 2, self.layout)
    for name, features in (('local3', self.features[2]), ('local4', self.features[3])):
      x = act(LocallyConnected(features, 3, init(name), dtype, name=name)(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, dtype=dtype, kernel_init=init('fc10'),
                    name='fc10')(x).astype(jnp.float32)

  def min_input_size(self) -> int:
    """Smallest square input (pixels) whose maps stay non-empty: the padded convolutions and
    local layers keep the side, each ceil-mode 3/2 pool takes n to ceil((n - 3) / 2) + 1, which
    is 0 for n = 1 (ceil_max_pool)."""
    pooled = lambda n: -(-(n - 3) // 2) + 1
    return next(n for n in itertools.count(1) if pooled(pooled(n)) >= 1)


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
    conv = lambda features, name: nn.Conv(features, (5, 5), padding='VALID', dtype=dtype,
                                          kernel_init=lecun_normal, name=name)
    dense = lambda features, name: nn.Dense(features, dtype=dtype, kernel_init=lecun_normal,
                                            name=name)
    x = pool(act(conv(6, 'conv1')(x)))
    x = pool(act(conv(16, 'conv2')(x)))
    x = x.reshape(x.shape[0], -1)
    x = act(dense(120, 'fc3')(x))
    x = act(dense(84, 'fc4')(x))
    return dense(self.num_classes, 'fc5')(x).astype(jnp.float32)

  def min_input_size(self) -> int:
    return 32  # The 5x5 C5 of the paper needs the 32x32 input (a larger one works too).
