"""The speed benchmarks run and report what they claim: the JAX benchmark's JSON, the PyTorch
reference model and the side-by-side comparison (tiny batches: these check the plumbing, never
a speed; speeds are measured by hand on a quiet machine, docs/performance.md)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
import torch

from alexnet_jax import onednn, registry
from benchmarks import compare, torch_alexnet
from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config shrunk (its Fashion-MNIST channel count does not matter: inputs are random).
TINY = ['--config=configs/default.py', '--config.model.conv_features=(8,16,24,24,16)',
        '--config.model.fc_features=(32,32)', '--config.input.image_size=67']


def _run(*args: str) -> str:
  # One CPU device, as users run it; XLA's optimisations mostly off, as in the whole suite
  # (tests/conftest.py).
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': ''}
  result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _tiny_parameter_count() -> int:
  config = default.get_config()
  config.model.update(conv_features=(8, 16, 24, 24, 16), fc_features=(32, 32))
  assert TINY[1:] == ['--config.model.conv_features=(8,16,24,24,16)',
                      '--config.model.fc_features=(32,32)', '--config.input.image_size=67']
  params = jax.eval_shape(registry.create_model(config.model).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 67, 67, 1), jnp.float32))['params']
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_jax_benchmark_json_has_the_promised_fields():
  result = json.loads(_run('-m', 'alexnet_jax.benchmark', *TINY, '--batch_size=4', '--steps=2',
                           '--warmup=1', '--json'))
  for key in ('train_images_per_sec', 'infer_images_per_sec', 'compile_seconds',
              'gflops_per_sec', 'batch_size', 'device'):
    assert key in result, key
  assert result['batch_size'] == 4
  assert result['train_images_per_sec'] > 0 and result['infer_images_per_sec'] > 0
  assert result['device'].startswith('cpu')
  assert result['convolutions'] == onednn.status()


def test_torch_reference_is_the_paper_model():
  assert torch_alexnet.parameter_count() == 60_965_224
  model = torch_alexnet.AlexNet()
  logits = model(torch.zeros(2, 3, 227, 227))
  assert logits.shape == (2, 1000)


@pytest.mark.slow
def test_compare_prints_every_contender_with_ratios(tmp_path):
  out = tmp_path / 'rows.json'
  # The JAX side on the tiny config (the overrides must reach the workers, or the JAX rows would
  # count the paper model's 61M parameters); PyTorch's is the paper model whatever it is.
  stdout = _run('-m', 'benchmarks.compare', '--batch_sizes=2', '--rounds=1', '--steps=1',
                '--torch_modes=eager', '--allocators=system', f'--json_out={out}', *TINY)
  written = json.loads(out.read_text())
  rows = written['rows']
  tiny_parameters = _tiny_parameter_count()
  assert [r['name'] for r in rows] == ['jax_fp32', 'torch_eager', 'jax_fp32_xla_convs',
                                       'jax_bf16']
  torch_row = rows[1]
  for row in rows:
    # Both workers ran on glibc's defaults (not the malloc settings `import alexnet_jax` makes).
    assert row['allocator'] == 'system'
    assert row['allocator_status'] == 'glibc defaults kept (ALEXNET_JAX_MALLOC=system)'
    assert row['train_images_per_sec'] > 0 and row['compile_seconds'] > 0
    assert row['name'] in stdout
    assert row['parameters'] == (60_965_224 if row is torch_row else tiny_parameters)
    # GFLOP/s from each row's own model: the paper's 3 x 724,406,816 multiply-adds x 2 per
    # training image (docs/paper.md, Counts) for PyTorch's.
    if row is torch_row:
      assert row['gflops_per_sec'] == pytest.approx(
          6 * 724_406_816 * row['train_images_per_sec'] / 1e9, rel=1e-6)
    else:
      assert row['gflops_per_sec'] < 0.01 * 4.35 * row['train_images_per_sec']
  assert 'best of each, batch 2 train (any allocator): jax_' in stdout
  note = (f"note: the JAX model has {tiny_parameters:,} parameters, PyTorch's 60,965,224: the "
          'ratios compare different models')
  assert note in stdout and written['note'].startswith(note)
  # The ratios are wired through to the rows (with one torch mode, torch's own is 1 by
  # definition: which torch row is divided by is tested with several modes below).
  for row in rows[:1] + rows[2:]:
    assert row['train_vs_best_torch'] == pytest.approx(
        row['train_images_per_sec'] / torch_row['train_images_per_sec'])


def test_each_allocator_is_an_environment_for_both_workers(monkeypatch):
  assert compare.allocator_environment('system') == {'ALEXNET_JAX_MALLOC': 'system',
                                                     'LD_PRELOAD': ''}
  assert compare.allocator_environment('tuned') == {'ALEXNET_JAX_MALLOC': 'tuned',
                                                    'LD_PRELOAD': ''}
  found = {'tcmalloc_minimal': 'libtcmalloc_minimal.so.4'}
  monkeypatch.setattr(compare.ctypes.util, 'find_library', found.get)
  assert compare.allocator_environment('tcmalloc') == {'LD_PRELOAD': 'libtcmalloc_minimal.so.4'}
  monkeypatch.setattr(compare.ctypes.util, 'find_library', lambda name: None)
  assert compare.allocator_environment('tcmalloc') is None  # Skipped, with a note.


def _row(name, allocator, train, infer=1.0, batch_size=32):
  return {'name': name, 'allocator': allocator, 'batch_size': batch_size,
          'train_images_per_sec': train, 'infer_images_per_sec': infer}


def test_ratios_divide_by_the_fastest_torch_mode_of_the_same_allocator():
  rows = compare.add_ratios([
      _row('jax_fp32', 'tuned', 60.0), _row('torch_eager', 'tuned', 40.0),
      _row('torch_compile', 'tuned', 50.0), _row('jax_fp32', 'system', 45.0),
      _row('torch_eager', 'system', 30.0)])
  by_key = {(r['name'], r['allocator']): r['train_vs_best_torch'] for r in rows}
  # Not the first torch row (40), not the other allocator's (30): torch_compile's 50.
  assert by_key[('jax_fp32', 'tuned')] == pytest.approx(60 / 50)
  assert by_key[('torch_eager', 'tuned')] == pytest.approx(40 / 50)
  assert by_key[('torch_compile', 'tuned')] == pytest.approx(1.0)
  assert by_key[('jax_fp32', 'system')] == pytest.approx(45 / 30)
  assert compare.add_ratios([_row('jax_fp32', 'tuned', 60.0)])[0]['train_vs_best_torch'] is None


def test_best_of_each_picks_each_frameworks_fastest_under_any_allocator():
  rows = [_row('jax_fp32', 'tuned', 60.0, infer=200.0), _row('jax_fp32', 'system', 45.0),
          _row('torch_eager', 'system', 30.0, infer=90.0),
          _row('torch_compile', 'tcmalloc', 50.0, infer=250.0)]
  summary = {(s['phase'], s['allocators']): s for s in compare.best_of_each(rows)}
  train = summary[('train', 'any')]
  assert (train['jax'], train['torch']) == ('jax_fp32@tuned', 'torch_compile@tcmalloc')
  assert train['jax_over_torch'] == pytest.approx(60 / 50)
  assert summary[('infer', 'any')]['jax_over_torch'] == pytest.approx(200 / 250)
  system = summary[('train', 'system')]
  assert (system['jax'], system['torch']) == ('jax_fp32@system', 'torch_eager@system')
  assert system['jax_over_torch'] == pytest.approx(45 / 30)


def test_flops_are_counted_whichever_convolution_kernels_run():
  from alexnet_jax import benchmark  # pylint: disable=import-outside-toplevel
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  model = registry.create_model(imagenet.get_config().model)
  # 3 x 724,406,816 multiply-adds x 2 (tests/conformance_test.py checks the multiply-adds).
  assert benchmark.training_flops_per_image(model, (227, 227, 3)) == 3 * 2 * 724_406_816


def test_profile_step_sums_each_instruction_by_kind_pass_and_layer():
  from benchmarks import profile_step  # pylint: disable=import-outside-toplevel
  hlo = '\n'.join([
      '  %ffi_call.3 = f32[8,4]{1,0} custom-call(%p), custom_call_target="alexnet_jax_conv_forward_'
      'float32", metadata={op_name="jit(step)/transpose(jvp(AlexNet))/conv2/ffi_call"}',
      '  %ynn_fusion.1 = f32[8,4]{1,0} fusion(%a), metadata={op_name="jit(step)/jvp(AlexNet)/fc6/'
      'dot_general"}',
      '  %select_fusion = f32[8]{0} fusion(%b), metadata={op_name="jit(step)/select_n"}',
      '  %ffi_call.7 = (f32[8,2]{1,0}, u8[16]{0}) custom-call(%q), custom_call_target="alexnet_jax_'
      'max_pool_forward_float32", metadata={op_name="jit(step)/jvp(AlexNet)/ffi_call"}',
      '  %ffi_call.9 = (f32[8,2]{1,0}, u8[0]{0}) custom-call(%r), custom_call_target="alexnet_jax_'
      'lrn_backward_float32", metadata={op_name="jit(step)/transpose(jvp(AlexNet))/AlexNet._lrn/'
      'ffi_call"}'])
  names = profile_step.instruction_names(hlo)
  assert names['ynn_fusion.1'] == 'jit(step)/jvp(AlexNet)/fc6/dot_general'
  events = [{'ph': 'X', 'name': 'ffi_call.3', 'dur': 4000}, {'ph': 'X', 'name': 'ffi_call.3',
                                                            'dur': 2000},
            {'ph': 'X', 'name': 'ynn_fusion.1', 'dur': 1000},
            {'ph': 'X', 'name': 'select_fusion', 'dur': 500},
            {'ph': 'X', 'name': 'ffi_call.7', 'dur': 800},
            {'ph': 'X', 'name': 'ffi_call.9', 'dur': 600},
            {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'dur': 9000},  # Not an instruction.
            {'ph': 'M', 'name': 'ffi_call.3'}]
  totals = profile_step.trace_totals(events, names, steps=2)
  assert totals == {('oneDNN conv', 'backward', 'conv2'): 3.0, ('matmul', 'forward', 'fc6'): 0.5,
                    ('other', 'step', 'select_n'): 0.25,
                    ('oneDNN max-pool', 'forward', 'max_pool'): 0.4,
                    ('oneDNN LRN', 'backward', 'lrn'): 0.3}
