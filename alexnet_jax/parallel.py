"""The device mesh and how the train state and batches are laid out on it.

The mesh has a 'data' axis (the batch is split over it, gradients are averaged) and a 'model' axis
(the paper's towers, one per model shard).
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.errors import UserError


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


def create_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
  data, model = mesh_shape(mesh_config, jax.device_count())
  if model != 1:
    raise UserError(f'config.mesh.model={model}: the model-parallel tower split is not available '
                    'in this version; use --config.mesh.model=1.')
  devices = np.asarray(jax.devices()).reshape(data, model)
  return Mesh(devices, ('data', 'model'))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
  """Replicated train state: with mesh.model == 1 every device holds all parameters."""
  return jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract_state)


def check_batch_size(batch_size: int, mesh: Mesh, name: str = 'batch_size') -> None:
  data = mesh.shape['data']
  if batch_size % data:
    raise UserError(f'config.{name}={batch_size} is not divisible by the {data} data-parallel '
                    f'devices; use a multiple of {data}.')


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into one global array sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
