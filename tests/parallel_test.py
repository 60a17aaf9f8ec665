"""The mesh layouts: the same numbers on every mesh, communication where the paper put it, errors.

Runs on the 8 CPU devices conftest forces; the forward and gradient checks run on both kernels
(config.kernels cpu and xla). Tolerances are fp32: one device and a mesh sum the same
products in a different order (gradient all-reduces, the split fc8 sum), so they agree to about
1e-6 relative; we allow rtol=1e-4 and atol=1e-5 (gradients) / 1e-5 (losses).
"""

import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import communication, metrics, onednn, optim, parallel, registry, train
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config

IMAGE_SHAPE = (67, 67, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (data, model, strategy); (1, 1) is the single-device reference.
LAYOUTS = [(1, 2, 'towers'), (2, 2, 'towers'), (4, 1, 'data'), (2, 2, 'hybrid')]
TRAIN_LAYOUTS = [(1, 1, 'towers'), (4, 2, 'towers'), (4, 2, 'hybrid'), (8, 1, 'data')]


def _mesh(data, model, strategy, towers=2):
  config = tiny_config(**{'mesh.data': data, 'mesh.model': model, 'mesh.strategy': strategy})
  return parallel.create_mesh(config.mesh, towers, jax.devices()[:data * model])


def _fitting(layouts):
  """The layouts this machine has devices for (accelerator hosts may have fewer than 8)."""
  fitting = [layout for layout in layouts if layout[0] * layout[1] <= jax.device_count()]
  if not fitting:
    pytest.skip(f'{jax.device_count()} devices: too few for any of {layouts}')
  return fitting


def _batch(size=8, seed=1):
  images = jax.random.normal(jax.random.key(seed), (size,) + IMAGE_SHAPE)
  return {'image': images, 'label': jnp.arange(size) % 10}


def _loss_and_grads(model, mesh, strategy, params, batch):
  distributed = parallel.DistributedModel(model, mesh, strategy)

  def loss_fn(params, batch):
    logits = distributed.apply({'params': params}, batch['image'], train=True,
                               rngs={'dropout': jax.random.key(7)})
    sums = metrics.classification_sums(logits, batch['label'])
    return sums['loss'] / sums['count'], logits

  shardings = parallel.state_shardings(mesh, jax.eval_shape(lambda: params), model, strategy)
  fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True),
               in_shardings=(shardings, parallel.batch_sharding(mesh)))
  (loss, logits), grads = fn(params, batch)
  return jax.device_get((loss, logits, grads))


@pytest.mark.accelerator
@pytest.mark.parametrize('kernels', ['cpu', 'xla'])  # Both of config.kernels' computations.
@pytest.mark.parametrize('model_overrides', [
    {},  # The paper's model: per-tower LRN, dropout after fc6/fc7.
    {'lrn_scope': 'across_towers', 'dropout_placement': 'before'},  # Caffe LRN, torchvision.
])
def test_forward_and_gradients_agree_across_meshes(model_overrides, kernels):
  config = tiny_config(**{f'model.{k}': v for k, v in model_overrides.items()})
  model = registry.create_model(config.model, layout=parallel.Layout(kernels=kernels))
  batch = _batch()
  params = model.init(jax.random.key(0), batch['image'][:1])['params']
  ref_loss, ref_logits, ref_grads = _loss_and_grads(model, _mesh(1, 1, 'towers'), 'towers',
                                                    params, batch)
  layouts = _fitting(LAYOUTS if not model_overrides else [(2, 2, 'towers')])
  for data, model_axis, strategy in layouts:
    loss, logits, grads = _loss_and_grads(model, _mesh(data, model_axis, strategy), strategy,
                                          params, batch)
    where = f'data={data} model={model_axis} {strategy}'
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5, err_msg=where)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=where)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5,
                                 err_msg=f'{where} {jax.tree_util.keystr(path)}')


@pytest.fixture(scope='module')
def trained():
  """Three SGD steps (dropout on) on each of TRAIN_LAYOUTS: losses, state and compiled HLO."""
  if jax.device_count() < 8:
    pytest.skip(f'needs 8 devices, {jax.device_count()} here')
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = optim.create_optimizer(config)
  init = lambda key: train.create_train_state(model, tx, key, IMAGE_SHAPE)
  batches = [_batch(16, seed) for seed in range(3)]
  runs = {}
  for data, model_axis, strategy in TRAIN_LAYOUTS:
    mesh = _mesh(data, model_axis, strategy)
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = parallel.state_shardings(mesh, abstract, model, strategy)
    state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
    step, _ = train.create_step_fns(model, tx, mesh, strategy, shardings)
    args = (np.float32(0.01), jax.random.key(3))
    compiled = step.lower(state, batches[0], *args).compile()
    initial_params = jax.device_get(state.params)
    losses = []
    for batch in batches:
      state, sums = compiled(state, jax.device_put(batch, parallel.batch_sharding(mesh)), *args)
      losses.append(float(sums['loss'] / sums['count']))
    runs[(data, model_axis, strategy)] = {'losses': losses, 'state': state, 'mesh': mesh,
                                          'hlo': compiled.as_text(),
                                          'initial_params': initial_params}
  return runs


@pytest.mark.accelerator
def test_training_losses_agree_across_meshes(trained):
  reference = trained[TRAIN_LAYOUTS[0]]
  for layout in TRAIN_LAYOUTS[1:]:
    np.testing.assert_allclose(trained[layout]['losses'], reference['losses'], rtol=1e-5,
                               err_msg=str(layout))
    ref_params = jax.device_get(reference['state'].params)
    for got, expected in zip(jax.tree.leaves(jax.device_get(trained[layout]['state'].params)),
                             jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=str(layout))
  # The steps really changed something: every parameter of every layout moved from its initial
  # value (else the agreement above would hold with no updates at all).
  for layout, run in trained.items():
    final = jax.device_get(run['state'].params)
    for (path, before), after in zip(jax.tree_util.tree_leaves_with_path(run['initial_params']),
                                     jax.tree.leaves(final)):
      assert not np.allclose(before, after, rtol=0, atol=1e-7), (layout, jax.tree_util.keystr(path))


@pytest.mark.accelerator
def test_data_parallel_convolutions_see_only_their_share_of_the_batch(trained):
  """jit's partitioner cannot split a custom call: it all-gathered the batch before each oneDNN
  convolution, so each of 8 devices convolved all 16 examples. Run per device (shard_map), each
  oneDNN call sees its 16 / 8 = 2."""
  if not onednn.available():
    pytest.skip(f'no oneDNN custom calls here: {onednn.status()}')
  hlo = trained[(8, 1, 'data')]['hlo']
  # Forward results and input gradients are activations: [batch, H, W, C].
  batches = re.findall(r'= f32\[(\d+),\d+,\d+,\d+\]\{[^}]*\} custom-call\([^\n]*'
                       r'custom_call_target="alexnet_jax_conv_(?:forward|backward_data)_', hlo)
  assert batches and set(batches) == {'2'}, batches


def _model_axis_groups(mesh):
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  return {tuple(int(i) for i in row) for row in ids}


def _scope(collective):
  """The paper's communication point a collective belongs to (from the module's named scopes)."""
  for point in ('conv3', 'fc6', 'fc7', 'fc8', 'lrn'):
    if f'cross_tower_{point}' in collective.op_name or f'gather_{point}' in collective.op_name:
      return point
  return None


@pytest.mark.accelerator
@pytest.mark.parametrize('strategy,expected_forward', [
    ('towers', {('all-gather', 'conv3'), ('all-gather', 'fc6'), ('all-gather', 'fc7'),
                ('all-reduce', 'fc8')}),
    ('hybrid', {('all-gather', 'fc6'), ('all-gather', 'fc7'), ('all-reduce', 'fc8')}),
])
def test_collectives_only_where_the_paper_communicates(trained, strategy, expected_forward):
  run = trained[(4, 2, strategy)]
  mesh = run['mesh']
  found = communication.collectives(run['hlo'], mesh.size)
  model_groups = _model_axis_groups(mesh)
  between_towers = [c for c in found if set(c.groups) == model_groups]
  forward = [c for c in between_towers if c.forward]
  # The forward pass talks between towers exactly at the paper's points, once each.
  assert sorted((c.kind, _scope(c)) for c in forward) == sorted(expected_forward), forward
  # None of conv1, conv2, conv4, conv5, their LRNs and pools causes any forward collective.
  for c in found:
    if c.forward:
      assert not any(f'/{layer}/' in c.op_name for layer in
                     ('conv1', 'conv2', 'conv4', 'conv5', 'lrn', 'max_pool')), c
  # Backward: between towers only the transposes of those points (gather <-> reduce-scatter).
  backward_points = {_scope(c) for c in between_towers if not c.forward}
  assert backward_points <= {scope for _, scope in expected_forward}, between_towers
  # Activations at conv3's input: [local batch 16/4, 3, 3, conv2 width of both towers].
  if strategy == 'towers':
    (conv3,) = [c for c in forward if _scope(c) == 'conv3']
    assert conv3.shapes == (('f32', (4, 3, 3, 16)),)


@pytest.mark.accelerator
def test_each_towers_parameters_live_only_on_its_model_shard(trained):
  run = trained[(4, 2, 'towers')]
  mesh, state = run['mesh'], run['state']
  full = jax.device_get(state.params)
  model_index = {d.id: m for row in mesh.devices for m, d in enumerate(row)}
  for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7'):
    for name in ('kernel', 'bias'):
      array = state.params[layer][name]
      assert array.sharding.spec == P('model')
      for shard in array.addressable_shards:
        tower = model_index[shard.device.id]
        assert shard.data.shape[0] == 1  # One tower per device, never both.
        assert shard.index[0] == slice(tower, tower + 1)
        np.testing.assert_array_equal(shard.data[0], full[layer][name][tower])
  # The momentum trace follows its parameter.
  is_trace = lambda x: isinstance(x, optax.TraceState)
  momentum = [s for s in jax.tree.leaves(state.opt_state, is_leaf=is_trace) if is_trace(s)][0].trace
  assert momentum['conv1']['kernel'].sharding.spec == P('model')
  assert state.params['fc8']['bias'].sharding.spec == P()
  # Hybrid: convolutions replicated (data-parallel), fully connected layers split.
  hybrid = trained[(4, 2, 'hybrid')]['state'].params
  assert hybrid['conv1']['kernel'].sharding.spec == P()
  assert hybrid['fc6']['kernel'].sharding.spec == P('model')


def test_clear_errors():
  with pytest.raises(UserError, match='must be 1 or config.model.towers=2'):
    _mesh(2, 4, 'towers')
  with pytest.raises(UserError, match='must be 1 or config.model.towers=1'):
    _mesh(4, 2, 'towers', towers=1)
  with pytest.raises(UserError, match='does not fit the 8 devices'):
    parallel.create_mesh(tiny_config(**{'mesh.data': 3, 'mesh.model': 2}).mesh, 2)
  with pytest.raises(UserError, match='strategy=data'):
    _mesh(4, 2, 'data')
  with pytest.raises(UserError, match='strategy'):
    _mesh(1, 1, 'pipeline')
  with pytest.raises(UserError, match='batch_size=10 is not divisible by the 4 devices'):
    parallel.check_batch_size(10, _mesh(4, 2, 'towers'))
  with pytest.raises(UserError, match='batch_size=4 is not divisible by the 8 devices'):
    parallel.check_batch_size(4, _mesh(4, 2, 'hybrid'), strategy='hybrid')
  parallel.check_batch_size(8, _mesh(4, 2, 'hybrid'), strategy='hybrid')


# --- Two processes (jax.distributed on localhost) through run.py ---------------------------------

def _run_flags(config, base):
  """--config.* flags for every leaf of `config` that differs from `base`."""
  flags = []
  for key, value in config.items():
    if hasattr(value, 'items'):
      flags += [f'--config.{key}.{f[len("--config."):]}' for f in _run_flags(value, base[key])]
    elif value != base[key]:
      text = '(' + ','.join(map(str, value)) + ')' if isinstance(value, tuple) else str(value)
      flags.append(f'--config.{key}={text}')
  return flags


def _launch(workdir, config, processes, devices_per_process):
  from configs import default
  flags = _run_flags(config, default.get_config())
  env = {**os.environ,
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_process}',
         'PYTHONPATH': ROOT}
  command = [sys.executable, os.path.join(ROOT, 'tests', 'mock_data_run.py'),
             '--config=' + os.path.join(ROOT, 'configs', 'default.py'), f'--workdir={workdir}',
             *flags]
  if processes > 1:
    with socket.socket() as s:
      s.bind(('localhost', 0))
      port = s.getsockname()[1]
    command += [f'--coordinator_address=localhost:{port}', f'--num_processes={processes}']
  procs = [subprocess.Popen(command + ([f'--process_id={i}'] if processes > 1 else []),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(processes)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def _losses(workdir):
  rows = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


@pytest.mark.slow
def test_two_processes_save_resume_and_restore_on_one_device(tmp_path, mock_fashion_mnist):
  workdir = str(tmp_path / 'run')
  tiny = lambda steps, data, model: tiny_config(**{
      'num_train_steps': steps, 'checkpoint_every_steps': 2, 'eval_every_steps': 100,
      'mesh.data': data, 'mesh.model': model})
  # 2 processes x 2 devices, the paper's towers within a process, the batch split across them.
  outputs = _launch(workdir, tiny(2, -1, 2), processes=2, devices_per_process=2)
  assert 'JAX process 0/2' in outputs[0] and 'step 2/2' in outputs[0]
  assert 'step 2/2' not in outputs[1]  # Only process 0 logs.
  # Resumed by the two processes on another mesh: towers across processes, no data axis split.
  _launch(workdir, tiny(3, 1, 2), processes=2, devices_per_process=1)
  # Restored onto one device without towers split.
  _launch(workdir, tiny(4, 1, 1), processes=1, devices_per_process=1)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '3', '4']
  # The same seed gives the same losses as a straight run on this process's 8-way data mesh.
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(tiny(4, -1, 1), straight)
  got, expected = _losses(workdir), _losses(straight)
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[s] for s in range(1, 5)], [expected[s] for s in range(1, 5)],
                             rtol=1e-4)
