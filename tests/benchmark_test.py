"""The speed benchmarks run and report what they claim: the JAX benchmark's JSON, the PyTorch
reference model and the side-by-side comparison (tiny batches: these check the plumbing, never
a speed; speeds are measured by hand on a quiet machine, docs/performance.md)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from alexnet_jax import onednn, registry
from benchmarks import torch_alexnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config shrunk (its Fashion-MNIST channel count does not matter: inputs are random).
TINY = ['--config=configs/default.py', '--config.model.conv_features=(8,16,24,24,16)',
        '--config.model.fc_features=(32,32)', '--config.input.image_size=67']


def _run(*args: str) -> str:
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': ''}  # One CPU device, as users run it.
  result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


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
  stdout = _run('-m', 'benchmarks.compare', '--batch_sizes=2', '--rounds=1', '--steps=1',
                '--torch_modes=eager', f'--json_out={out}')
  rows = json.loads(out.read_text())
  assert [r['name'] for r in rows] == ['jax_fp32', 'torch_eager', 'jax_fp32_xla_convs',
                                       'jax_bf16']
  torch_row = rows[1]
  assert torch_row['train_vs_best_torch'] == pytest.approx(1.0)
  for row in rows:
    assert row['train_images_per_sec'] > 0 and row['compile_seconds'] > 0
    assert row['name'] in stdout


def test_flops_are_counted_whichever_convolution_kernels_run():
  from alexnet_jax import benchmark  # pylint: disable=import-outside-toplevel
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  model = registry.create_model(imagenet.get_config().model)
  # 3 x 724,406,816 multiply-adds x 2 (tests/conformance_test.py checks the multiply-adds).
  assert benchmark.training_flops_per_image(model, (227, 227, 3)) == 3 * 2 * 724_406_816
