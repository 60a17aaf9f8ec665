"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as the paper's Fig. 2 draws it, in Flax Linen.

The paper trains two "towers", one per GPU (docs/paper.md, "Two GPUs (§3.2)"). A tower layer stores
its parameters stacked on a leading tower axis (``kernel[t]`` is tower ``t``'s kernel) and passes a
tuple with one activation per tower to the next layer. The towers meet only where the paper's GPUs
talked: conv3's input and the fully connected layers. Where the towers live and which kernels
compute the layers is not the model's business: it is the ``layout`` (``parallel.Layout``), which
turns the meeting points into concatenations on one device, or collectives when the towers sit on
different devices.

Every field is a config key (``config.model.<field>``); the defaults are the paper.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.parallel import DTYPES, Layout

Array = jax.Array
Towers = tuple[Array, ...]  # One activation per tower held on this device.

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {'relu': nn.relu, 'tanh': jnp.tanh}
POOLINGS = {'overlapping': (3, 2), 'non_overlapping': (2, 2)}  # (window, stride), §3.4.
# 'after': dropout on the outputs of fc6 and fc7 (the paper, cuda-convnet2, Caffe);
# 'before': on their inputs (torchvision).
DROPOUT_PLACEMENTS = ('after', 'before')
LRN_SCOPES = ('per_tower', 'across_towers')
# Weight init per scheme and layer: (weight, bias). weight: the std of a normal, None for fan-in
# scaled (He et al. 2015: std sqrt(2 / fan_in)), or FAN_IN_UNIFORM; bias: a constant or
# FAN_IN_UNIFORM. Sources: docs/paper.md, "Training (§5)", "Where Krizhevsky's code differs from
# the paper", "Caffe bvlc_alexnet", "torchvision".
FAN_IN_UNIFORM = 'fan_in_uniform'  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's layer default.
CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')  # Fig. 2's layers, input to output.
FC_LAYERS = ('fc6', 'fc7', 'fc8')
LAYERS = CONV_LAYERS + FC_LAYERS
WEIGHT_INITS: dict[str, dict[str, tuple[float | str | None, float | str]]] = {
    # §5: N(0, 0.01) weights, biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
    'paper': {'conv1': (0.01, 0.0), 'conv2': (0.01, 1.0), 'conv3': (0.01, 0.0),
              'conv4': (0.01, 1.0), 'conv5': (0.01, 1.0), 'fc6': (0.01, 1.0),
              'fc7': (0.01, 1.0), 'fc8': (0.01, 0.0)},
    'he': {layer: (None, 0.0) for layer in LAYERS},
    # cuda-convnet2's 2-GPU model file: initW=0.03 in conv3-5 (layers cfg lines 143, 157, 172,
    # 186, 200, 214), 0.01 elsewhere (lines 17, 30, 73, 87, 242, 251, 268, 277, 294); initB=1 in
    # conv2, conv4, conv5, fc6, fc7 (lines 74, 173, 201, 243, 269), default 0 (layer.py line 950).
    'cuda_convnet2': {'conv1': (0.01, 0.0), 'conv2': (0.01, 1.0), 'conv3': (0.03, 0.0),
                      'conv4': (0.03, 1.0), 'conv5': (0.03, 1.0), 'fc6': (0.01, 1.0),
                      'fc7': (0.01, 1.0), 'fc8': (0.01, 0.0)},
    # Caffe bvlc_alexnet train_val.prototxt: std 0.01 (lines 59, 115, 170, 204, 238, 360) except
    # fc6/fc7 0.005 (lines 280, 320); bias 0.1 where the paper has 1 (lines 119, 208, 242, 284,
    # 324), 0 elsewhere (lines 63, 174, 364).
    'caffe': {'conv1': (0.01, 0.0), 'conv2': (0.01, 0.1), 'conv3': (0.01, 0.0),
              'conv4': (0.01, 0.1), 'conv5': (0.01, 0.1), 'fc6': (0.005, 0.1),
              'fc7': (0.005, 0.1), 'fc8': (0.01, 0.0)},
    # torchvision's alexnet has no init code: PyTorch's nn.Conv2d / nn.Linear reset_parameters,
    # kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)) weights and U(+-1/sqrt(fan_in)) biases
    # (torch/nn/modules/conv.py lines 182-205, linear.py lines 117-128, torch 2.13).
    'pytorch': {layer: (FAN_IN_UNIFORM, FAN_IN_UNIFORM) for layer in LAYERS},
}
# cuda-convnet2's same-map response normalization after conv2's LRN (`conv2_rnorm`): for each map,
# b = a / (min_div + scale / size^2 * sum of a^2 over the size x size neighbourhood)^pow, the
# window [x - size // 2, x - size // 2 + size) cut off at the edges. layers cfg lines 107-117
# (type=rnorm, size=5), params cfg lines 176-182 (scale=0.001, pow=0.75; minDiv unset: 1),
# layer.py lines 1330-1333 (scale / size^2), cudaconv3/src/conv_util.cu lines 966-1011.
RNORM_SIZE, RNORM_SCALE, RNORM_POW, RNORM_MIN_DIV = 5, 1e-3, 0.75, 1.0


def local_response_norm(x: Array, *, k: float = 2.0, n: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, alpha_divided_by_n: bool = False,
                        layout: Layout = Layout()) -> Array:
  """§3.3 LRN over the channel (last) axis: x_i / (k + alpha * sum_{|j-i|<=n/2} x_j^2)^beta.

  The paper (and ``tf.nn.local_response_normalization``) does not divide alpha by n; PyTorch and
  Caffe do (``alpha_divided_by_n=True``): docs/paper.md, "LRN (§3.3)". Shape preserved.
  """
  return layout.lrn(x, k, n, alpha / n if alpha_divided_by_n else alpha, beta)


def _name(value: Any) -> str:
  """A config value as its name: dtypes as 'float32' whether given as a string or a dtype."""
  try:
    return jnp.dtype(value).name if not isinstance(value, str) else value
  except TypeError:
    return str(value)


def spatial_response_norm(x: Array, *, size: int = RNORM_SIZE, scale: float = RNORM_SCALE,
                          power: float = RNORM_POW, min_div: float = RNORM_MIN_DIV) -> Array:
  """cuda-convnet2's `rnorm` (same-map) normalization of NHWC `x`, per channel: see RNORM_*."""
  # A concrete (numpy) zero: a traced one under jit makes reduce_window the generic reduction,
  # which JAX cannot differentiate ("Linearization failed").
  squares = jax.lax.reduce_window(jnp.square(x), np.zeros((), x.dtype), jax.lax.add,
                                  (1, size, size, 1), (1, 1, 1, 1),
                                  ((0, 0), (size // 2, size - 1 - size // 2),
                                   (size // 2, size - 1 - size // 2), (0, 0)))
  return x * (min_div + scale / size**2 * squares) ** -power


# The weights are drawn as one flat array, then shaped. Under JAX's default (partitionable)
# Threefry a draw numbers its elements in row-major order, so the values are those of a shaped
# draw; but XLA on CPU compiles a draw of a 5-D kernel shape in ~3 s, a flat one in ~0.15 s.
def drawn_flat(draw: Callable[[tuple[int]], Array], shape: Sequence[int]) -> Array:
  return draw((math.prod(shape),)).reshape(shape)


def _fan_in_uniform(key: Array, shape: Sequence[int], fan_in: int) -> Array:
  bound = 1.0 / math.sqrt(fan_in)
  return drawn_flat(lambda flat: jax.random.uniform(key, flat, jnp.float32, -bound, bound), shape)


def normal(std: float) -> Callable:
  """N(0, std), as nn.initializers.normal(std) draws it."""
  return lambda key, shape, dtype=jnp.float32: drawn_flat(
      lambda flat: jax.random.normal(key, flat, dtype) * jnp.asarray(std, dtype), shape)


def _he_normal(key: Array, shape: Sequence[int], fan_in: int,
               dtype: Any = jnp.float32) -> Array:
  """He et al. 2015: N(0, 2 / fan_in), as jax's variance_scaling(2, 'fan_in', 'normal') draws it
  for that fan-in."""
  std = jnp.sqrt(jnp.array(2.0 / fan_in, dtype))
  return drawn_flat(lambda flat: jax.random.normal(key, flat, dtype), shape) * std


def _initializers(scheme: str, layer: str, summed_towers: int = 1) -> tuple[Callable, Callable]:
  """(kernel_init(key, shape), bias_init(key, shape, fan_in)) of `layer` under `scheme`.

  Kernels are [towers, (kh, kw,) in, out]; a unit's fan-in is one tower's kh * kw * in, times
  `summed_towers` for a layer that sums its towers' partial products (fc8 reads every tower).
  """
  std, bias = WEIGHT_INITS[scheme][layer]
  fan_in = lambda shape: summed_towers * math.prod(shape[1:-1])  # The tower axis is a batch axis.
  if std is None:
    kernel_init = lambda key, shape, dtype=jnp.float32: _he_normal(key, shape, fan_in(shape),
                                                                   dtype)
  elif std == FAN_IN_UNIFORM:
    kernel_init = lambda key, shape, dtype=jnp.float32: _fan_in_uniform(key, shape, fan_in(shape))
  else:
    kernel_init = normal(std)
  if bias == FAN_IN_UNIFORM:
    return kernel_init, _fan_in_uniform
  return kernel_init, _constant(bias)


def _constant(value: float) -> Callable:
  return lambda key, shape, fan_in: jnp.full(shape, value, jnp.float32)


def _stacked(xs: Towers, dtype: Any) -> Array:
  """The towers' [B, features] inputs as one [towers, B, features] array of `dtype`."""
  return jnp.stack([x.astype(dtype) for x in xs])


class TowerConv(nn.Module):
  """One convolution per tower: ``features`` kernels of ``kernel_size``^2 each, NHWC."""
  towers: int
  features: int  # Per tower.
  kernel_size: int
  stride: int = 1
  padding: int = 0
  kernel_init: Callable = normal(0.01)
  bias_init: Callable = _constant(0.0)  # (key, shape, fan_in) -> bias.
  dtype: Any = jnp.float32
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, inputs: Towers) -> Towers:
    stored = self.layout.stored_towers(self.name, self.towers)
    kernel = self.param('kernel', self.kernel_init, (stored, self.kernel_size, self.kernel_size,
                                                     inputs[0].shape[-1], self.features))
    fan_in = math.prod(kernel.shape[1:-1])
    bias = self.param('bias', self.bias_init, (stored, self.features), fan_in)
    outputs = self.layout.tower_convs(inputs, kernel.astype(self.dtype), self.stride,
                                      self.padding)
    return tuple(y + bias[t].astype(self.dtype) for t, y in enumerate(outputs))


class TowerDense(nn.Module):
  """One dense layer per tower, ``features`` outputs each; a shared input feeds every tower."""
  towers: int
  features: int  # Per tower.
  kernel_init: Callable = normal(0.01)
  bias_init: Callable = _constant(0.0)  # (key, shape, fan_in) -> bias.
  dtype: Any = jnp.float32
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, inputs: Towers) -> Towers:
    stored = self.layout.stored_towers(self.name, self.towers)
    kernel = self.param('kernel', self.kernel_init, (stored, inputs[0].shape[-1], self.features))
    bias = self.param('bias', self.bias_init, (stored, self.features), kernel.shape[1])
    inputs = inputs * stored if len(inputs) != stored else inputs
    # One batched product over the towers: its kernel gradient is one [towers, in, out] array
    # (per-tower `kernel[t]` products had it as a zero-padded full array per tower, summed:
    # an extra pass over fc6's 151 MB, 2% of a batch-32 step, docs/performance.md).
    outputs = jnp.einsum('tbi,tio->tbo', _stacked(inputs, self.dtype), kernel.astype(self.dtype))
    return tuple(outputs + bias[:, None].astype(self.dtype))


class TowerSumDense(nn.Module):
  """A dense layer over all towers' features, as the sum of each tower's partial product.

  Tower t multiplies its own slice of the input by its block of rows of the weight matrix; summed,
  that is the full product (across devices, one all-reduce of the logits).
  """
  towers: int
  features: int
  kernel_init: Callable = normal(0.01)
  bias_init: Callable = _constant(0.0)  # (key, shape, fan_in) -> bias.
  dtype: Any = jnp.float32
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, inputs: Towers) -> Array:
    stored = self.layout.stored_towers(self.name, self.towers)
    kernel = self.param('kernel', self.kernel_init, (stored, inputs[0].shape[-1], self.features))
    fan_in = self.towers * inputs[0].shape[-1]  # The sum runs over every tower's features.
    bias = self.param('bias', self.bias_init, (self.features,), fan_in)
    partial = jnp.einsum('tbi,tio->bo', _stacked(inputs, self.dtype), kernel.astype(self.dtype))
    total = self.layout.sum_towers(partial, self.name, self.towers)
    return total + bias.astype(self.dtype)


class AlexNet(nn.Module):
  """The paper's network, Fig. 2: images [B, H, W, C] -> logits [B, num_classes] (float32).

  Widths are totals over the towers (each tower gets 1/towers). ``towers=1`` with conv widths
  (48, 128, 192, 192, 256) is the paper's one-GPU comparison net (§3.2); ``towers=1``,
  (64, 192, 384, 256, 256), ``conv1_padding=2`` at 224x224 is torchvision's variant.

  Raises ValueError (naming the field) for a value outside the choices below.
  """
  num_classes: int = 1000  # Replaced by the data set's class count when they differ.
  conv_features: Sequence[int] = (96, 256, 384, 384, 256)  # conv1-conv5 totals (§3.5).
  fc_features: Sequence[int] = (4096, 4096)  # fc6, fc7 totals (§3.5).
  towers: int = 2  # 2: the paper's two GPUs (§3.2); 1: one tower of the same widths.
  activation: str = 'relu'  # relu (§3.1) | tanh (Fig. 1's comparison).
  lrn: bool = True  # LRN after conv1's and conv2's ReLU (§3.3).
  lrn_scope: str = 'per_tower'  # per_tower (cuda-convnet2) | across_towers (Caffe).
  lrn_k: float = 2.0  # §3.3 constants: k, window n, alpha, beta.
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  lrn_alpha_divided_by_n: bool = False  # The paper: no; PyTorch and Caffe: yes.
  # cuda-convnet2 (docs/paper.md, "Where Krizhevsky's code differs from the paper"): conv1 has no
  # ReLU of its own; LRN sees its signed responses and the ReLU sits on pool1 (layers cfg 9-63).
  conv1_relu_after_pool: bool = False
  conv2_rnorm: bool = False  # cuda-convnet2: same-map `rnorm` after conv2's LRN (see RNORM_*).
  conv1_padding: int = 0  # torchvision's variant: 2.
  pooling: str = 'overlapping'  # overlapping 3/2 (§3.4) | non_overlapping 2/2.
  dropout_rate: float = 0.5  # §4.2, in fc6 and fc7.
  dropout_placement: str = 'after'  # after: fc6/fc7 outputs (paper) | before: inputs (torchvision).
  weight_init: str = 'paper'  # A scheme of WEIGHT_INITS: paper (§5) | he | cuda_convnet2 | caffe
  #                             | pytorch (torchvision's: PyTorch's layer defaults).
  # Computation dtype (float32 | bfloat16 | auto: bfloat16 only where it is no slower, see
  # parallel.DTYPES); parameters stay float32.
  dtype: Any = 'float32'
  layout: Layout = Layout()  # Where the towers live and which kernels run (not a config key).

  conv_layers: ClassVar[tuple[str, ...]] = CONV_LAYERS
  fc_layers: ClassVar[tuple[str, ...]] = FC_LAYERS
  feature_layer: ClassVar[str] = 'fc7'  # Its ReLU output is the image's feature vector (§6.1).

  def __post_init__(self):
    for field, choices in (('activation', ACTIVATIONS), ('pooling', POOLINGS),
                           ('lrn_scope', LRN_SCOPES), ('dropout_placement', DROPOUT_PLACEMENTS),
                           ('weight_init', WEIGHT_INITS), ('dtype', DTYPES)):
      if _name(getattr(self, field)) not in choices:
        raise ValueError(f'{field}={getattr(self, field)!r} is unknown; expected one of '
                         f'{", ".join(choices)}.')
    widths = tuple(self.conv_features) + tuple(self.fc_features)
    checks = [
        (self.towers in (1, 2), f'towers={self.towers} must be 1 or 2.'),
        (len(self.conv_features) == 5 and len(self.fc_features) == 2,
         'conv_features needs 5 widths and config.model.fc_features 2.'),
        (all(w > 0 and w % max(self.towers, 1) == 0 for w in widths),
         f'conv_features and fc_features {widths} must be positive multiples of '
         f'towers={self.towers}.'),
        (isinstance(self.lrn_n, int) and self.lrn_n > 0 and self.lrn_n % 2 == 1,
         f'lrn_n={self.lrn_n!r} must be an odd window size, centred on the channel (the '
         'paper: 5).'),
        (self.lrn_k > 0 and self.lrn_alpha >= 0 and self.lrn_beta > 0,
         f'lrn_k={self.lrn_k}, lrn_alpha={self.lrn_alpha}, lrn_beta={self.lrn_beta}: LRN needs '
         'k > 0, alpha >= 0 and beta > 0 (the paper: 2, 1e-4, 0.75).'),
        (0 <= self.dropout_rate < 1, f'dropout_rate={self.dropout_rate} must be in [0, 1).'),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(message)
    super().__post_init__()

  def min_input_size(self) -> int:
    """Smallest square input (pixels) for which every layer still has a non-empty output."""
    window, stride = POOLINGS[self.pooling]
    size = window  # pool5 needs conv5's output >= one window (conv3-5 keep the size).
    size = (size - 1) * stride + window  # pool2's input: conv2's output, the same size.
    size = (size - 1) * stride + window  # pool1's input: conv1's output.
    return (size - 1) * 4 + 11 - 2 * self.conv1_padding  # conv1: 11x11, stride 4.

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    T, layout = self.towers, self.layout
    dtype = jnp.dtype(layout.compute_dtype(_name(self.dtype)))
    c1, c2, c3, c4, c5 = (c // T for c in self.conv_features)
    f6, f7 = (f // T for f in self.fc_features)
    window, stride = POOLINGS[self.pooling]
    act = lambda xs: tuple(ACTIVATIONS[self.activation](x) for x in xs)
    pool = lambda xs: tuple(layout.max_pool(x, window, stride) for x in xs)
    drop_in = lambda xs: self._dropout(xs, train, True) if self.dropout_placement == 'before' else xs
    drop_out = lambda xs: self._dropout(xs, train) if self.dropout_placement == 'after' else xs

    def conv(name, features, size, stride_, padding):
      return TowerConv(T, features, size, stride_, padding, *self._init(name), dtype, layout,
                       name=name)

    def dense(name, features):
      return TowerDense(T, features, *self._init(name), dtype, layout, name=name)

    x = (images_BHWC.astype(dtype),)  # Both towers see the whole image.
    x = conv('conv1', c1, 11, 4, self.conv1_padding)(x)
    # ReLU and max-pool commute: only LRN's input differs between the two orders.
    x = act(pool(self._lrn(x))) if self.conv1_relu_after_pool else pool(self._lrn(act(x)))
    x = self._lrn(act(conv('conv2', c2, 5, 1, 2)(x)))
    if self.conv2_rnorm:
      x = tuple(spatial_response_norm(t) for t in x)
    x = pool(x)
    x = (layout.all_towers(x, T, 'conv3'),)  # conv3 sees both towers.
    x = act(conv('conv3', c3, 3, 1, 1)(x))
    x = act(conv('conv4', c4, 3, 1, 1)(x))
    x = pool(act(conv('conv5', c5, 3, 1, 1)(x)))
    x = layout.gather_conv_batch(layout.all_towers(x, T, 'fc6'))  # fc6 sees both towers.
    x = drop_out(act(dense('fc6', f6)(drop_in((x.reshape(x.shape[0], -1),)))))
    x = drop_out(act(dense('fc7', f7)(drop_in((layout.all_towers(x, T, 'fc7'),)))))
    # fc8 sees both towers too: each multiplies its half of fc7 by its rows of the fc8 matrix.
    logits = TowerSumDense(T, self.num_classes, *self._init('fc8'), dtype, layout, name='fc8')(x)
    return logits.astype(jnp.float32)

  def _init(self, layer: str) -> tuple[Callable, Callable]:
    return _initializers(self.weight_init, layer, self.towers if layer == 'fc8' else 1)

  def _lrn(self, xs: Towers) -> Towers:
    if not self.lrn:
      return xs
    norm = functools.partial(local_response_norm, k=self.lrn_k, n=self.lrn_n,
                             alpha=self.lrn_alpha, beta=self.lrn_beta,
                             alpha_divided_by_n=self.lrn_alpha_divided_by_n, layout=self.layout)
    if self.lrn_scope == 'per_tower':  # The window never crosses the split.
      return tuple(norm(x) for x in xs)
    # Caffe: the window runs over all channels of both towers.
    width = xs[0].shape[-1]
    normed = norm(self.layout.all_towers(xs, self.towers, 'lrn'))
    first = self.layout.tower_index(0, len(xs), self.towers) * width
    return tuple(jax.lax.dynamic_slice_in_dim(normed, first + t * width, width, axis=-1)
                 for t in range(len(xs)))

  def _dropout(self, xs: Towers, train: bool, shared: bool = False) -> Towers:
    """Inverted dropout of each tower's activations; `shared`: of one input all towers read.

    Masks are keyed by the global tower and example index, so a seed drops the same units on any
    device mesh.
    """
    if not train or self.dropout_rate == 0.0:
      return xs
    keep = 1.0 - self.dropout_rate
    key = self.make_rng('dropout')
    examples = self.layout.example_index(xs[0].shape[0])
    out = []
    for t, x in enumerate(xs):
      tower_key = key if shared else jax.random.fold_in(
          key, self.layout.tower_index(t, len(xs), self.towers))
      keys = jax.vmap(jax.random.fold_in, (None, 0))(tower_key, examples)
      mask = jax.vmap(lambda k, shape=x.shape[1:]: jax.random.bernoulli(k, keep, shape))(keys)
      out.append(jnp.where(mask, x / keep, jnp.zeros_like(x)))
    return tuple(out)
