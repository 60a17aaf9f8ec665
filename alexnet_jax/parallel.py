"""The device mesh, and how the train state, the batches and the towers are laid out on it.

The mesh has a 'data' axis (the batch is split over it, gradients are averaged) and a 'model' axis
(size 1, or the number of towers). `config.mesh.strategy` says what the 'model' axis holds:

* 'towers' (the paper, §3.2): tower t's parameters and activations live on model-shard t. The
  towers exchange activations only at conv3's input and the fully connected layers (and at LRN
  with lrn_scope='across_towers').
* 'hybrid' (Krizhevsky 2014, "One weird trick"): the convolutions are data-parallel over every
  device (both towers' conv parameters replicated, the batch split over 'data' and 'model'); their
  outputs are gathered along 'model' before fc6, and fc6-fc8 are split by tower over 'model'.
* 'data': plain data parallelism; the 'model' axis must have size 1.

The model sees all of this through one object, `Layout`: where its towers are stored and meet,
and which kernels compute its layers. With model=1 every strategy is data parallelism. The
model-parallel layouts run the module inside `jax.shard_map` (see `DistributedModel`); the rest of
the step is ordinary `jax.jit` code over global arrays. See docs/parallelism.md.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import onednn, ops
from alexnet_jax.errors import UserError

# config.kernels: which kernels compute the layers.
# 'cpu': oneDNN's convolutions, max-pools and LRNs (over multiples of 16 channels; the others:
#        XLA's fused loop) where the library is built (else ops.py's hand-written LRN / max-pool
#        gradients and conv1's weight gradient as matrix products),
#        conv1's towers merged into one convolution: each measured faster than XLA:CPU's own
#        (docs/performance.md);
# 'xla': plain lax ops differentiated by JAX (XLA's own fused kernels: GPU, TPU);
# 'auto': 'cpu' on the CPU backend, 'xla' elsewhere.
KERNELS = ('auto', 'cpu', 'xla')


def platform_kernels(setting: str, platform: str | None = None) -> str:
  """'cpu' or 'xla' for `setting` ('auto' decides from `platform`, default JAX's backend)."""
  if setting not in KERNELS:
    raise UserError(f'config.kernels={setting!r} is unknown; expected one of {", ".join(KERNELS)}.')
  if setting != 'auto':
    return setting
  return 'cpu' if (platform or jax.default_backend()) == 'cpu' else 'xla'


# config.model.dtype: the dtype of the computation (parameters stay float32).
# 'auto': bfloat16 only where it was measured no slower than float32: the CPU kernels on a CPU
#         with AMX (Intel Sapphire Rapids and later), where oneDNN's bfloat16 convolutions use it
#         (paper model, b128: training as fast as float32, inference 1.27x). float32 elsewhere:
#         on a CPU without AMX (e.g. AMD EPYC with avx512_bf16 only) bfloat16 trains and infers
#         slower than float32, and XLA's own CPU convolutions are slower in bfloat16 on any CPU
#         (docs/performance.md, "bfloat16"); nothing was measured on a GPU or TPU yet.
DTYPES = ('auto', 'float32', 'bfloat16')
AMX_FLAGS = frozenset({'amx_tile', 'amx_bf16'})  # Linux's /proc/cpuinfo names.


def cpu_flags() -> frozenset[str]:
  """The CPU's feature flags as Linux lists them (/proc/cpuinfo); empty where it does not."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def platform_dtype(setting: str, kernels: str = 'auto', platform: str | None = None,
                   flags: frozenset[str] | None = None) -> str:
  """'float32' or 'bfloat16' for config.model.dtype `setting` ('auto' decides, see DTYPES).

  `kernels` is config.kernels, `platform` JAX's backend (default: the current one), `flags` the
  CPU's feature flags (default: `cpu_flags()`). Raises UserError for an unknown setting.
  """
  if setting not in DTYPES:
    raise UserError(f'config.model.dtype={setting!r} is unknown; expected one of '
                    f'{", ".join(DTYPES)}.')
  if setting != 'auto':
    return setting
  platform = platform or jax.default_backend()
  if platform != 'cpu' or platform_kernels(kernels, platform) != 'cpu':
    return 'float32'
  flags = cpu_flags() if flags is None else flags
  return 'bfloat16' if AMX_FLAGS <= flags and onednn.available() else 'float32'


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a tower model's towers live and which kernels compute its layers.

  The default holds every tower on one device. Inside `jax.shard_map` (`DistributedModel`) the
  layers of `split_layers` store one tower per device along the mesh axis `tower_axis`, and the
  towers meet through collectives; `batch_axis` / `conv_batch_axis` name the axes the batch is
  split along (for the hybrid strategy the convolutions see a batch also split along
  `conv_batch_axis`, gathered before fc6). Activations of tower layers are tuples, one array per
  tower held here.
  """
  kernels: str = 'auto'  # config.kernels (KERNELS).
  tower_axis: str | None = None
  split_layers: frozenset[str] = frozenset()
  batch_axis: str | None = None
  conv_batch_axis: str | None = None

  # --- Where the towers live. ---

  def stored_towers(self, layer: str, towers: int) -> int:
    """How many of `layer`'s towers this device stores: all, or its share when split."""
    if layer in self.split_layers:
      return towers // lax.axis_size(self.tower_axis)
    return towers

  def all_towers(self, xs: Sequence[jax.Array], towers: int, scope: str) -> jax.Array:
    """Every tower's channels, concatenated in tower order: where the towers communicate."""
    local = jnp.concatenate(xs, axis=-1) if len(xs) > 1 else xs[0]
    if len(xs) == towers or self.tower_axis is None:  # All towers are on this device.
      return local
    with jax.named_scope(f'cross_tower_{scope}'):
      return lax.all_gather(local, self.tower_axis, axis=local.ndim - 1, tiled=True)

  def sum_towers(self, partial: jax.Array, layer: str, towers: int) -> jax.Array:
    """The sum over every tower of each tower's `partial` result (fc8's partial logits)."""
    if self.stored_towers(layer, towers) == towers:
      return partial
    with jax.named_scope(f'cross_tower_{layer}'):
      return lax.psum(partial, self.tower_axis)

  def tower_index(self, local_index: int, local_towers: int, towers: int) -> jax.Array | int:
    """The global index of the `local_index`-th tower held here."""
    if local_towers == towers or self.tower_axis is None:
      return local_index
    return lax.axis_index(self.tower_axis) * local_towers + local_index

  def example_index(self, batch: int) -> jax.Array:
    """Global indices of the `batch` examples held here (after the conv batch is gathered)."""
    first = 0 if self.batch_axis is None else lax.axis_index(self.batch_axis) * batch
    return first + jnp.arange(batch)

  def gather_conv_batch(self, x: jax.Array) -> jax.Array:
    """Hybrid strategy: the convolutions' batch shards joined for the fully connected layers."""
    if self.conv_batch_axis is None:
      return x
    with jax.named_scope('hybrid_batch_gather_fc6'):
      return lax.all_gather(x, self.conv_batch_axis, axis=0, tiled=True)

  # --- Which kernels compute the layers. ---

  @property
  def cpu_kernels(self) -> bool:
    return platform_kernels(self.kernels) == 'cpu'

  def compute_dtype(self, setting: str) -> str:
    """config.model.dtype `setting` resolved for these kernels on this machine (DTYPES)."""
    return platform_dtype(setting, self.kernels)

  def tower_convs(self, inputs: Sequence[jax.Array], kernel: jax.Array, stride: int,
                  padding: int) -> tuple[jax.Array, ...]:
    """Tower t's convolution of inputs[t] with kernel[t] (NHWC x [T, kh, kw, cin, cout]).

    A single input is shared by every tower (the image, or conv3's gathered input).
    """
    stored = kernel.shape[0]
    if len(inputs) == 1 and stored > 1 and stride > 1 and self.cpu_kernels:
      # conv1: one convolution with the towers' kernels side by side reads the image once
      # (measured faster on CPU; for conv3's shared stride-1 input it measured slower).
      merged = jnp.concatenate(list(kernel), axis=-1)
      return tuple(jnp.split(self.conv(inputs[0], merged, stride, padding), stored, axis=-1))
    inputs = inputs * stored if len(inputs) != stored else inputs
    return tuple(self.conv(x, kernel[t], stride, padding) for t, x in enumerate(inputs))

  def conv(self, x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    if self.cpu_kernels:
      return ops.conv(x.astype(kernel.dtype), kernel, stride, padding)
    return ops.reference_conv(x.astype(kernel.dtype), kernel, stride, padding)

  def lrn(self, x: jax.Array, k: float, n: int, alpha: float, beta: float) -> jax.Array:
    if self.cpu_kernels:
      return ops.fused_lrn(x, k, n, alpha, beta)
    return ops.reference_lrn(x, k=k, n=n, alpha=alpha, beta=beta)

  def max_pool(self, x: jax.Array, window: int, stride: int) -> jax.Array:
    if self.cpu_kernels:
      return ops.max_pool(x, window, stride)
    return ops.reference_max_pool(x, window, stride)


STRATEGIES = ('towers', 'hybrid', 'data')


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, model) axis sizes; -1 fills the devices that are left."""
  data, model = int(mesh_config.data), int(mesh_config.model)
  if model == -1 and data == -1:
    raise UserError('config.mesh.data and config.mesh.model are both -1; set at least one.')
  if model == -1:
    model = num_devices // max(data, 1)
  if data == -1:
    data = num_devices // max(model, 1)
  if data < 1 or model < 1 or data * model != num_devices:
    raise UserError(
        f'config.mesh (data={mesh_config.data}, model={mesh_config.model}) does not fit the '
        f'{num_devices} devices; choose sizes whose product is {num_devices} (-1 fills).')
  return data, model


def create_mesh(mesh_config: ml_collections.ConfigDict, towers: int,
                devices: list[jax.Device] | None = None) -> Mesh:
  """The ('data', 'model') mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  strategy = mesh_config.get('strategy', 'towers')
  if strategy not in STRATEGIES:
    raise UserError(f'config.mesh.strategy={strategy!r} is unknown; expected one of '
                    f'{", ".join(STRATEGIES)}.')
  data, model = mesh_shape(mesh_config, len(devices))
  if strategy == 'data' and model != 1:
    raise UserError(f'config.mesh.strategy=data keeps the model whole on every device, but '
                    f'config.mesh.model={model}; set --config.mesh.model=1, or use the towers '
                    'or hybrid strategy.')
  if model not in (1, towers):
    raise UserError(f'config.mesh.model={model} does not divide the network: the model axis '
                    f'holds whole towers, so it must be 1 or config.model.towers={towers}.')
  # Process-major device order keeps each process's devices in whole rows of the mesh, so the
  # 'model' axis crosses processes only when a process has fewer devices than `model`.
  return Mesh(np.asarray(devices).reshape(data, model), ('data', 'model'))


def strategy_of(mesh_config: ml_collections.ConfigDict) -> str:
  return mesh_config.get('strategy', 'towers')


def split_layers(mesh: Mesh, strategy: str, model: nn.Module) -> frozenset[str]:
  """The layers of `model` whose tower axis is split over the 'model' axis."""
  if mesh.shape['model'] == 1:
    return frozenset()
  fc = tuple(getattr(model, 'fc_layers', ()))
  return frozenset(fc if strategy == 'hybrid' else tuple(getattr(model, 'conv_layers', ())) + fc)


def _leaf_spec(path: tuple[Any, ...], leaf: Any, split: frozenset[str]) -> P:
  """P('model') for a tower-stacked leaf of a split layer, found by its (layer, name) path end.

  Matching the end of the path covers the parameters and every optimizer-state copy of them
  (e.g. the momentum trace), whatever optimizer wraps them. Every array of a tower layer has the
  tower axis first, but for the one parameter all towers share: the last layer's 1-D bias (the
  TowerSumDense of fc8).
  """
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  if len(names) >= 2 and getattr(leaf, 'ndim', 0) >= 2 and names[-2] in split:
    return P('model')
  return P()


def state_shardings(mesh: Mesh, abstract_state: Any, model: nn.Module,
                    strategy: str = 'towers') -> Any:
  """Shardings of the train state: split layers on their model shard, the rest replicated."""
  split = split_layers(mesh, strategy, model)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, _leaf_spec(path, leaf, split)), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches enter the step split over 'data' (each model shard holds the whole data shard)."""
  return NamedSharding(mesh, P('data'))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = 'batch_size',
                     strategy: str = 'towers') -> None:
  data = mesh.shape['data']
  if strategy == 'hybrid':  # The convolutions split the batch over both axes.
    data *= mesh.shape['model']
  if batch_size % data:
    raise UserError(f'config.{name}={batch_size} is not divisible by the {data} devices the '
                    f'batch is split over (mesh {dict(mesh.shape)}, strategy {strategy}); '
                    f'use a multiple of {data}.')


def process_batch_shard(mesh: Mesh) -> tuple[int, int]:
  """(index, count): this process feeds part `index` of the global batch cut in `count` parts.

  Usually (process_index, process_count); but processes whose devices hold the same data shard
  (a 'model' axis across processes) must feed the same examples.
  """
  data_rows = {row for row, devices in enumerate(mesh.devices)
               for d in devices if d.process_index == jax.process_index()}
  first, rows = min(data_rows), len(data_rows)
  if data_rows != set(range(first, first + rows)) or first % rows:
    raise UserError(f'the devices of process {jax.process_index()} do not form a block of '
                    f'mesh rows ({sorted(data_rows)}); use a data axis that is a multiple of '
                    'the process count.')
  return first // rows, mesh.shape['data'] // rows


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into one global array sharded over 'data'."""
  sharding = batch_sharding(mesh)
  _, parts = process_batch_shard(mesh)
  return {k: jax.make_array_from_process_local_data(
      sharding, v, (v.shape[0] * parts,) + v.shape[1:]) for k, v in local_batch.items()}


@dataclasses.dataclass(frozen=True)
class DistributedModel:
  """`model` laid out on `mesh` by `strategy`, with the `apply` signature of a Linen module.

  A tower model (one with a `layout`) on more than one device runs inside `jax.shard_map`: each
  device computes its share of the batch and holds its slice of the stored tower axis of split
  layers (one tower); the module's collectives join the towers, and JAX's transpose of the
  replicated parameters sums their gradients over the batch shards. Plain data parallelism runs
  there too, not by jit's partitioner: that cannot split the oneDNN custom calls (onednn.py) and
  would all-gather the batch before each, so every device convolved the whole batch (measured in
  docs/parallelism.md). Other models (no layout, no custom calls) are the module itself, and jit
  partitions their batch.
  """
  model: nn.Module
  mesh: Mesh
  strategy: str = 'towers'

  def apply(self, variables: dict[str, Any], images: jax.Array, *, train: bool = False,
            rngs: dict[str, jax.Array] | None = None) -> jax.Array:
    split = split_layers(self.mesh, self.strategy, self.model)
    if self.mesh.size == 1 or not hasattr(self.model, 'layout'):
      return self.model.apply(variables, images, train=train, rngs=rngs)
    hybrid = self.strategy == 'hybrid' and bool(split)
    module = self.model.clone(layout=dataclasses.replace(
        self.model.layout, tower_axis='model' if split else None, split_layers=split,
        batch_axis='data', conv_batch_axis='model' if hybrid else None))
    params = variables['params']
    param_specs = jax.tree_util.tree_map_with_path(
        lambda path, leaf: _leaf_spec(path, leaf, split), params)
    # Paper: both towers see the whole image. Hybrid: the convolutions split the batch further.
    image_spec = P(('data', 'model')) if hybrid else P('data')
    rngs = dict(rngs or {})

    def forward(params, images, rngs):
      return module.apply({'params': params}, images, train=train, rngs=rngs)

    return jax.shard_map(
        forward, mesh=self.mesh,
        in_specs=(param_specs, image_spec, jax.tree.map(lambda _: P(), rngs)),
        out_specs=P('data'))(params, images, rngs)
