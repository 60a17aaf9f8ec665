"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as a Flax Linen module.

The paper trains two "towers", one per GPU. Every layer that belongs to a tower stores its
parameters stacked on a leading tower axis (``kernel[t]`` is tower ``t``'s kernel), so that the
model-parallel layout can place tower ``t`` on model-shard ``t`` by sharding that axis. On one device
each tower runs as a plain convolution: XLA:CPU's grouped convolutions (``feature_group_count=2``) are
about 3x slower than two plain ones.

Activations between layers are tuples with one array per local tower. The towers exchange data only
where the paper's GPUs did: at conv3's input, at the fully connected layers (and, with the
Caffe-compatible ``lrn_scope='across_towers'``, at the two LRN layers). Those points go through
``_all_towers`` and ``TowerSumDense``: plain concatenations and sums while a layer's towers are all
local, and collectives over ``tower_axis`` when the module runs inside ``jax.shard_map`` with that
layer named in ``split_layers`` (its stored tower axis split over devices, one tower per device).
parallel.py chooses the split layers and the matching parameter shardings.

Dropout masks depend only on the key, the global tower index and the global example index, so a
given seed drops the same units whatever the device mesh.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax import onednn, ops

Array = jax.Array
Towers = tuple[Array, ...]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {'relu': nn.relu, 'tanh': jnp.tanh}
POOLINGS = {'overlapping': (3, 2), 'non_overlapping': (2, 2)}  # (window, stride)
# 'after': on the outputs of fc6 and fc7 (the paper's cuda-convnet2, Caffe);
# 'before': on the inputs of fc6 and fc7 (torchvision).
DROPOUT_PLACEMENTS = ('after', 'before')
LRN_SCOPES = ('per_tower', 'across_towers')
INITS = ('paper', 'he')
MODEL_NAMES = ('alexnet', 'small_cnn', 'lenet5')  # config.model.name


def local_response_norm(x: Array, *, k: float = 2.0, n: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, alpha_divided_by_n: bool = False,
                        fast: bool = True) -> Array:
  """Paper §3.3 LRN over the last axis: x / (k + alpha * sum_{|j-i|<=n/2} x_j^2)^beta.

  The paper (and TensorFlow) does not divide alpha by n; PyTorch and Caffe do
  (`alpha_divided_by_n=True`). `fast`: the fused kernel with a hand-written gradient (ops.py).
  """
  if alpha_divided_by_n:
    alpha = alpha / n
  if fast:
    return ops.fused_lrn(x, k, n, alpha, beta)
  return ops.reference_lrn(x, k=k, n=n, alpha=alpha, beta=beta)


def max_pool(x: Array, window: int, stride: int, fast: bool = True) -> Array:
  if fast:
    return ops.max_pool(x, window, stride)
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding='VALID')


def _stored_towers(towers: int, split_axis: str | None) -> int:
  """How many towers this device stores: all, or its share when split over `split_axis`."""
  return towers if split_axis is None else towers // lax.axis_size(split_axis)


def _vary_like(kernel: Array, x: Array) -> Array:
  """`kernel` typed as varying over every mesh axis `x` varies over (a no-op outside shard_map).

  ops.conv's hand-written gradient returns the kernel gradient with x's device variation; marking
  the kernel first lets autodiff sum that gradient over the data axis, where it belongs.
  """
  missing = tuple(sorted(onednn.varying_axes(x) - onednn.varying_axes(kernel)))
  return lax.pcast(kernel, missing, to='varying') if missing else kernel


def _tower_weight_init(init: str, bias: float) -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) for stacked tower parameters (tower axis first)."""
  if init == 'paper':  # §5: N(0, 0.01) weights; biases 1 or 0 depending on the layer.
    return nn.initializers.normal(0.01), nn.initializers.constant(bias)
  if init == 'he':  # Robust choice: fan-in scaled per tower kernel, zero biases.
    return (nn.initializers.variance_scaling(2.0, 'fan_in', 'normal', in_axis=-2, out_axis=-1,
                                             batch_axis=(0,)),
            nn.initializers.zeros)
  raise ValueError(f'unknown init {init!r}; expected one of {INITS}')


class TowerConv(nn.Module):
  """One convolution per tower; parameters stacked on a leading tower axis."""
  towers: int
  features_per_tower: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  init_scheme: str = 'paper'
  bias_init_value: float = 0.0
  dtype: Any = jnp.float32
  fast_ops: bool = True  # ops.conv (faster strided weight gradient) instead of ops.reference_conv.
  split_axis: str | None = None  # Inside shard_map: the mesh axis the towers are split over.

  @nn.compact
  def __call__(self, inputs: Towers) -> Towers:
    kernel_init, bias_init = _tower_weight_init(self.init_scheme, self.bias_init_value)
    in_features = inputs[0].shape[-1]
    # Split over devices, the stored leading axis is the local slice (one tower per device).
    local_towers = _stored_towers(self.towers, self.split_axis)
    kernel = self.param('kernel', kernel_init, (local_towers, self.kernel_size, self.kernel_size,
                                                 in_features, self.features_per_tower))
    bias = self.param('bias', bias_init, (local_towers, self.features_per_tower))
    if len(inputs) != local_towers:
      inputs = inputs * local_towers  # Shared input (the image, or conv3's gathered input).
    conv = ops.conv if self.fast_ops else ops.reference_conv
    if self.fast_ops and self.stride > 1 and local_towers > 1 and all(
        x is inputs[0] for x in inputs):
      # conv1: every tower reads the image, so one convolution with the towers' kernels side by
      # side reads it once (measured faster; for conv3's shared input it measured slower).
      merged_kernel = jnp.concatenate(list(kernel), axis=-1).astype(self.dtype)
      y = conv(inputs[0].astype(self.dtype), _vary_like(merged_kernel, inputs[0]), self.stride,
               self.padding)
      return tuple(y_t + bias[t].astype(self.dtype)
                   for t, y_t in enumerate(jnp.split(y, local_towers, axis=-1)))
    outputs = []
    for t in range(local_towers):
      y = conv(inputs[t].astype(self.dtype), _vary_like(kernel[t].astype(self.dtype), inputs[t]),
               self.stride, self.padding)
      outputs.append(y + bias[t].astype(self.dtype))
    return tuple(outputs)


class TowerDense(nn.Module):
  """One dense layer per tower; parameters stacked on a leading tower axis."""
  towers: int
  features_per_tower: int
  init_scheme: str = 'paper'
  bias_init_value: float = 0.0
  dtype: Any = jnp.float32
  split_axis: str | None = None  # Inside shard_map: the mesh axis the towers are split over.

  @nn.compact
  def __call__(self, inputs: Towers) -> Towers:
    kernel_init, bias_init = _tower_weight_init(self.init_scheme, self.bias_init_value)
    local_towers = _stored_towers(self.towers, self.split_axis)
    kernel = self.param('kernel', kernel_init,
                        (local_towers, inputs[0].shape[-1], self.features_per_tower))
    bias = self.param('bias', bias_init, (local_towers, self.features_per_tower))
    if len(inputs) != local_towers:
      inputs = inputs * local_towers
    return tuple(inputs[t].astype(self.dtype) @ kernel[t].astype(self.dtype)
                 + bias[t].astype(self.dtype) for t in range(local_towers))


class TowerSumDense(nn.Module):
  """A dense layer over the concatenated towers, computed as a sum of per-tower products.

  Tower t multiplies its own slice of the input by its block of rows of the weight matrix; the
  partial results are summed (a ``psum`` over ``split_axis`` under shard_map).
  """
  towers: int
  features: int
  init_scheme: str = 'paper'
  dtype: Any = jnp.float32
  split_axis: str | None = None  # Inside shard_map: the mesh axis the towers are split over.

  @nn.compact
  def __call__(self, inputs: Towers) -> Array:
    kernel_init, bias_init = _tower_weight_init(self.init_scheme, 0.0)
    kernel = self.param('kernel', kernel_init, (_stored_towers(self.towers, self.split_axis),
                                                 inputs[0].shape[-1], self.features))
    bias = self.param('bias', lambda key, shape: bias_init(key, (1,) + shape)[0], (self.features,))
    partial = [x.astype(self.dtype) @ kernel[t].astype(self.dtype) for t, x in enumerate(inputs)]
    total = sum(partial[1:], partial[0])
    if kernel.shape[0] < self.towers:  # The other towers' rows live on other devices.
      with jax.named_scope('cross_tower_fc8'):
        total = lax.psum(total, self.split_axis)
    return total + bias.astype(self.dtype)


class AlexNet(nn.Module):
  """The paper's network. Widths are totals over the towers; each tower gets 1/towers of them.

  ``towers=1`` with halved conv widths (48, 128, 192, 192, 256) is the paper's one-GPU comparison
  net (§6.1 keeps conv5 and the FC layers at full width); ``towers=1`` with (64, 192, 384, 256, 256)
  is torchvision's variant.
  """
  num_classes: int = 1000
  conv_features: Sequence[int] = (96, 256, 384, 384, 256)
  fc_features: Sequence[int] = (4096, 4096)
  towers: int = 2
  activation: str = 'relu'
  lrn: bool = True
  lrn_scope: str = 'per_tower'
  lrn_k: float = 2.0
  lrn_n: int = 5
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  lrn_alpha_divided_by_n: bool = False
  conv1_padding: int = 0  # torchvision's variant pads conv1 by 2 (and takes 224x224 inputs).
  pooling: str = 'overlapping'
  dropout_rate: float = 0.5
  dropout_placement: str = 'after'
  init_scheme: str = 'paper'
  dtype: Any = jnp.float32
  # Mesh axes, used only inside jax.shard_map (see parallel.py):
  # the axis the towers of `split_layers` are split along (one tower per device);
  tower_axis: str | None = None
  split_layers: Sequence[str] = ()
  # the axis the batch of the fully connected layers is split along (for dropout's example index);
  batch_axis: str | None = None
  # Krizhevsky (2014) hybrid: the convolutions see a batch also split along this axis; their
  # output is gathered along it before fc6, which then sees the batch of the whole data shard.
  conv_batch_axis: str | None = None
  # Hand-written gradients for LRN, max-pool and conv weights (ops.py): same maths, faster on CPU.
  fast_ops: bool = True

  def _all_towers(self, xs: Towers, scope: str) -> Array:
    """Every tower's channels, concatenated in tower order (cross-tower communication)."""
    local = jnp.concatenate(xs, axis=-1) if len(xs) > 1 else xs[0]
    if len(xs) == self.towers or self.tower_axis is None:  # All towers are on this device.
      return local
    with jax.named_scope(f'cross_tower_{scope}'):
      return lax.all_gather(local, self.tower_axis, axis=local.ndim - 1, tiled=True)

  def _tower_index(self, local_index: int, local_towers: int) -> Array | int:
    if local_towers == self.towers or self.tower_axis is None:
      return local_index
    return lax.axis_index(self.tower_axis) * local_towers + local_index

  def _lrn(self, xs: Towers) -> Towers:
    if not self.lrn:
      return xs
    norm = lambda x: local_response_norm(x, k=self.lrn_k, n=self.lrn_n, alpha=self.lrn_alpha,
                                         beta=self.lrn_beta,
                                         alpha_divided_by_n=self.lrn_alpha_divided_by_n,
                                         fast=self.fast_ops)
    if self.lrn_scope == 'per_tower':  # cuda-convnet2: the window never crosses the split.
      return tuple(norm(x) for x in xs)
    # Caffe: the window runs over all channels of both towers.
    width = xs[0].shape[-1]
    normed = norm(self._all_towers(xs, 'lrn'))
    first = self._tower_index(0, len(xs)) * width
    return tuple(lax.dynamic_slice_in_dim(normed, first + t * width, width, axis=-1)
                 for t in range(len(xs)))

  def _dropout(self, xs: Towers, train: bool, shared: bool = False) -> Towers:
    """Dropout on each tower's activations; `shared`: on one input every tower sees in full."""
    if not train or self.dropout_rate == 0.0:
      return xs
    keep = 1.0 - self.dropout_rate
    key = self.make_rng('dropout')
    batch = xs[0].shape[0]
    first_example = 0 if self.batch_axis is None else lax.axis_index(self.batch_axis) * batch
    examples = first_example + jnp.arange(batch)
    out = []
    for t, x in enumerate(xs):
      # Keyed by the global tower and example index, so the masks do not depend on the mesh.
      tower_key = key if shared else jax.random.fold_in(key, self._tower_index(t, len(xs)))
      keys = jax.vmap(jax.random.fold_in, (None, 0))(tower_key, examples)
      mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, x.shape[1:]))(keys)
      out.append(jnp.where(mask, x / keep, jnp.zeros_like(x)))
    return tuple(out)

  def _gather_conv_batch(self, x: Array) -> Array:
    if self.conv_batch_axis is None:
      return x
    with jax.named_scope('hybrid_batch_gather_fc6'):
      return lax.all_gather(x, self.conv_batch_axis, axis=0, tiled=True)

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; expected one of {list(ACTIVATIONS)}')
    if self.pooling not in POOLINGS:
      raise ValueError(f'unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}')
    if self.dropout_placement not in DROPOUT_PLACEMENTS:
      raise ValueError(f'unknown dropout_placement {self.dropout_placement!r}; '
                       f'expected one of {DROPOUT_PLACEMENTS}')
    if self.lrn_scope not in LRN_SCOPES:
      raise ValueError(f'unknown lrn_scope {self.lrn_scope!r}; expected one of {LRN_SCOPES}')
    act = ACTIVATIONS[self.activation]
    window, stride = POOLINGS[self.pooling]
    T = self.towers
    c1, c2, c3, c4, c5 = (c // T for c in self.conv_features)
    f6, f7 = (f // T for f in self.fc_features)
    split = lambda name: self.tower_axis if name in self.split_layers else None
    conv = lambda name, f, k, s, p, b: TowerConv(T, f, k, s, p, self.init_scheme, b, self.dtype,
                                                 self.fast_ops, split(name), name=name)
    dense = lambda name, f, b: TowerDense(T, f, self.init_scheme, b, self.dtype, split(name),
                                          name=name)
    acts = lambda xs: tuple(act(x) for x in xs)
    pool = lambda xs: tuple(max_pool(x, window, stride, self.fast_ops) for x in xs)

    before = lambda xs: (self._dropout(xs, train, shared=True)
                         if self.dropout_placement == 'before' else xs)
    after = lambda xs: self._dropout(xs, train) if self.dropout_placement == 'after' else xs

    x = (images_BHWC.astype(self.dtype),)
    x = pool(self._lrn(acts(conv('conv1', c1, 11, 4, self.conv1_padding, 0.0)(x))))
    x = pool(self._lrn(acts(conv('conv2', c2, 5, 1, 2, 1.0)(x))))
    x = (self._all_towers(x, 'conv3'),)  # conv3 sees both towers.
    x = acts(conv('conv3', c3, 3, 1, 1, 0.0)(x))
    x = acts(conv('conv4', c4, 3, 1, 1, 1.0)(x))
    x = pool(acts(conv('conv5', c5, 3, 1, 1, 1.0)(x)))
    x = self._gather_conv_batch(self._all_towers(x, 'fc6'))  # fc6 sees both towers.
    x = before((x.reshape(x.shape[0], -1),))
    x = after(acts(dense('fc6', f6, 1.0)(x)))
    x = before((self._all_towers(x, 'fc7'),))  # fc7 sees both towers.
    x = after(acts(dense('fc7', f7, 1.0)(x)))
    # fc8 also sees both towers: each tower multiplies its half of fc7 by its rows of the fc8
    # matrix and the partial logits are summed, which is the full product.
    logits = TowerSumDense(T, self.num_classes, self.init_scheme, self.dtype, split('fc8'),
                           name='fc8')(x)
    return logits.astype(jnp.float32)


def create_model(model_config: Any, num_classes: int | None = None) -> nn.Module:
  """Builds the module named by ``config.model.name`` from its config block."""
  name = model_config.get('name', 'alexnet')
  if name == 'alexnet':
    return AlexNet(
        num_classes=num_classes or model_config.num_classes,
        conv_features=tuple(model_config.conv_features),
        fc_features=tuple(model_config.fc_features),
        towers=model_config.towers,
        activation=model_config.activation,
        lrn=model_config.lrn,
        lrn_scope=model_config.lrn_scope,
        pooling=model_config.pooling,
        dropout_rate=model_config.dropout_rate,
        dropout_placement=model_config.get('dropout_placement', 'after'),
        conv1_padding=model_config.get('conv1_padding', 0),
        lrn_k=model_config.get('lrn_k', 2.0),
        lrn_n=model_config.get('lrn_n', 5),
        lrn_alpha=model_config.get('lrn_alpha', 1e-4),
        lrn_beta=model_config.get('lrn_beta', 0.75),
        lrn_alpha_divided_by_n=model_config.get('lrn_alpha_divided_by_n', False),
        init_scheme=model_config.init,
        dtype=jnp.dtype(model_config.get('dtype', 'float32')),
        fast_ops=model_config.get('fast_ops', True),
    )
  if name == 'small_cnn':
    return create_small_cnn(model_config, num_classes)
  if name == 'lenet5':
    return LeNet5(num_classes=num_classes or model_config.num_classes,
                  activation=model_config.get('lenet_activation', 'tanh'),
                  dtype=jnp.dtype(model_config.get('dtype', 'float32')))
  raise ValueError(f'unknown model name {name!r}')


class SmallCNN(nn.Module):
  """The paper's Fig. 1 network: a four-layer CIFAR-10 CNN (three convolutions and a classifier).

  The paper does not list its layers; this follows cuda-convnet's CIFAR-10 net of that era
  (``layers-18pct``): 5x5 convolutions of 32, 32 and 64 kernels, each followed by the activation
  and an overlapping 3/2 max-pool, then one dense layer. No normalization or dropout: Fig. 1 used
  no regularization of any kind.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 32, 64)
  activation: str = 'relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    del train  # Nothing differs between training and evaluation.
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; '
                       f'expected one of {list(ACTIVATIONS)}')
    act = ACTIVATIONS[self.activation]
    x = images_BHWC.astype(self.dtype)
    for i, features in enumerate(self.features):
      x = nn.Conv(features, (5, 5), padding=2, dtype=self.dtype, name=f'conv{i + 1}')(x)
      # ceil-mode pooling (as cuda-convnet): 'SAME' keeps the border column of odd sizes.
      x = nn.max_pool(act(x), (3, 3), strides=(2, 2), padding='SAME')
    x = x.reshape(x.shape[0], -1)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return logits.astype(jnp.float32)


def create_small_cnn(model_config: Any, num_classes: int | None = None) -> SmallCNN:
  return SmallCNN(num_classes=num_classes or model_config.num_classes,
                  features=tuple(model_config.get('small_cnn_features', (32, 32, 64))),
                  activation=model_config.activation,
                  dtype=jnp.dtype(model_config.get('dtype', 'float32')))


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al., 1998), the baseline AlexNet is usually compared with.

  C1 6@5x5 -> S2 2x2 average pool -> C3 16@5x5 -> S4 2x2 average pool -> C5 120 -> F6 84 -> output.
  Two simplifications, as in most modern reimplementations: C3 sees all six S2 maps (the paper
  wires each C3 map to a subset), and S2/S4 are plain average pools (the paper's have a trainable
  scale and bias). On a 32x32 input C5 is a 5x5 convolution over a 5x5 map, i.e. a dense layer.
  """
  num_classes: int = 10
  activation: str = 'tanh'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_BHWC: Array, *, train: bool = False) -> Array:
    del train  # No dropout in LeNet-5.
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; '
                       f'expected one of {list(ACTIVATIONS)}')
    act = ACTIVATIONS[self.activation]
    pool = lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = images_BHWC.astype(self.dtype)
    x = pool(act(nn.Conv(6, (5, 5), padding='VALID', dtype=self.dtype, name='conv1')(x)))
    x = pool(act(nn.Conv(16, (5, 5), padding='VALID', dtype=self.dtype, name='conv2')(x)))
    x = x.reshape(x.shape[0], -1)
    x = act(nn.Dense(120, dtype=self.dtype, name='fc3')(x))
    x = act(nn.Dense(84, dtype=self.dtype, name='fc4')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc5')(x).astype(jnp.float32)
