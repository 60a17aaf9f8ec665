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

With model=1 every strategy is data parallelism. The model-parallel layouts run the module inside
`jax.shard_map` (see `DistributedModel`); the rest of the step is ordinary `jax.jit` code over
global arrays. See docs/parallelism.md for a diagram and measured communication.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.errors import UserError

STRATEGIES = ('towers', 'hybrid', 'data')
# Layers whose parameters are stacked on a leading tower axis (fc8's bias is not).
TOWER_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
FC_LAYERS = ('fc6', 'fc7', 'fc8')


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


def split_layers(mesh: Mesh, strategy: str) -> tuple[str, ...]:
  """The layers whose tower axis is split over the 'model' axis."""
  if mesh.shape['model'] == 1:
    return ()
  return FC_LAYERS if strategy == 'hybrid' else TOWER_LAYERS


def _leaf_spec(path: tuple[Any, ...], leaf: Any, split: tuple[str, ...]) -> P:
  """P('model') for a tower-stacked leaf of a split layer, found by its (layer, name) path end.

  Matching the end of the path covers the parameters and every optimizer-state copy of them
  (e.g. the momentum trace), whatever optimizer wraps them.
  """
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  if len(names) >= 2 and getattr(leaf, 'ndim', 0) >= 1:
    layer, name = names[-2], names[-1]
    if layer in split and not (layer == 'fc8' and name == 'bias'):
      return P('model')
  return P()


def state_shardings(mesh: Mesh, abstract_state: Any, strategy: str = 'towers') -> Any:
  """Shardings of the train state: split layers on their model shard, the rest replicated."""
  split = split_layers(mesh, strategy)
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

  Without a split layer this is the module itself (jit partitions the batch). Otherwise the
  forward pass runs inside `jax.shard_map`: each device holds its slice of the stored tower axis
  (one tower) and the module's collectives join the towers.
  """
  model: nn.Module
  mesh: Mesh
  strategy: str = 'towers'

  def apply(self, variables: dict[str, Any], images: jax.Array, *, train: bool = False,
            rngs: dict[str, jax.Array] | None = None) -> jax.Array:
    split = split_layers(self.mesh, self.strategy)
    if not split:
      return self.model.apply(variables, images, train=train, rngs=rngs)
    hybrid = self.strategy == 'hybrid'
    module = self.model.clone(tower_axis='model', split_layers=split, batch_axis='data',
                              conv_batch_axis='model' if hybrid else None)
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
