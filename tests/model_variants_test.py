"""The reference implementations' variants of AlexNet: cuda-convnet2's layer order and its extra
same-map normalization, and the weight-init schemes of cuda-convnet2, Caffe and PyTorch.

References are independent: a numpy loop for `rnorm`, PyTorch for the whole cuda-convnet2 order,
the source files' numbers (docs/paper.md) for the init schemes.
"""

import functools
import math

import jax
import numpy as np
import pytest
import torch
from torch import nn

from alexnet_jax import convert, models
from tests.convert_test import CaffeAlexNet, _numpy_state


def _rnorm_reference(x_NHWC: np.ndarray, size=5, scale=1e-3, power=0.75, min_div=1.0):
  """cuda-convnet2's kCNorm_manyfilter (conv_util.cu 966-1011) written as plain loops."""
  out = np.empty_like(x_NHWC)
  _, height, width, _ = x_NHWC.shape
  for y in range(height):
    for x in range(width):
      y0, x0 = y - size // 2, x - size // 2
      window = x_NHWC[:, max(0, y0):min(height, y0 + size), max(0, x0):min(width, x0 + size)]
      denom = min_div + scale / size**2 * np.square(window).sum(axis=(1, 2))
      out[:, y, x] = x_NHWC[:, y, x] * denom ** -power
  return out


def test_spatial_response_norm_is_cuda_convnet2s_rnorm():
  x = np.random.default_rng(0).normal(0, 30, (2, 7, 9, 3)).astype(np.float32)
  got = np.asarray(models.spatial_response_norm(x))
  np.testing.assert_allclose(got, _rnorm_reference(x), rtol=1e-5)
  # Nearest wrong readings: scale not divided by size^2, or a window not centred on the pixel.
  assert np.abs(_rnorm_reference(x, scale=1e-3 * 25) - got).max() > 100 * np.abs(
      _rnorm_reference(x) - got).max()
  shifted = np.asarray(models.spatial_response_norm(np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))))
  assert not np.allclose(shifted[:, :-1, :-1], got, rtol=1e-3)


def test_spatial_response_norm_gradient_under_jit_is_torchs():
  # The train step differentiates it under jit; torch's autograd of the same formula (avg_pool2d
  # with the zero padding counted, as in CudaConvnet2AlexNet below) is the reference.
  rng = np.random.default_rng(1)
  x = rng.normal(0, 30, (2, 7, 9, 3)).astype(np.float32)
  cotangent = rng.normal(0, 1, x.shape).astype(np.float32)
  got = jax.jit(jax.grad(lambda v: (models.spatial_response_norm(v) * cotangent).sum()))(x)
  x_NCHW = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  squares = nn.functional.avg_pool2d(x_NCHW * x_NCHW, 5, stride=1, padding=2,
                                     count_include_pad=True) * 25
  normed = x_NCHW * (1.0 + 1e-3 / 25 * squares) ** -0.75
  (normed * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()
  expected = x_NCHW.grad.numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
  assert np.abs(cotangent - expected).max() > 1e-2 * np.abs(expected).max()  # The norm acts.


class CudaConvnet2AlexNet(CaffeAlexNet):
  """The order of layers-imagenet-2gpu-model.cfg: conv1 -> LRN -> pool -> ReLU (lines 9-63);
  conv2 -> ReLU -> LRN -> rnorm -> pool (lines 65-133); LRN per tower with cuda-convnet2's
  constants (alpha 1e-4 divided by 5, k=2)."""

  def __init__(self):
    super().__init__()
    self.lrn1 = self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

  def _per_tower(self, lrn, x):
    return torch.cat([lrn(half) for half in x.chunk(2, dim=1)], dim=1)

  def forward(self, x):
    L = self.layers
    x = torch.relu(self.pool1(self._per_tower(self.lrn1, L['conv1'](x))))
    x = self._per_tower(self.lrn2, torch.relu(L['conv2'](x)))
    # rnorm: sum of squares over the 5x5 window (zeros outside) = 25 x the padded average.
    squares = nn.functional.avg_pool2d(x * x, 5, stride=1, padding=2, count_include_pad=True) * 25
    x = self.pool2(x * (1.0 + 1e-3 / 25 * squares) ** -0.75)
    x = torch.relu(L['conv4'](torch.relu(L['conv3'](x))))
    x = self.pool5(torch.relu(L['conv5'](x))).flatten(1)
    return L['fc8'](torch.relu(L['fc7'](torch.relu(L['fc6'](x)))))


def test_cuda_convnet2_switches_give_its_layer_order():
  torch.manual_seed(0)
  reference = CudaConvnet2AlexNet()
  blobs = {k.removeprefix('layers.'): v for k, v in _numpy_state(reference).items()}
  params = convert.convert(convert.caffe_weights(blobs), towers=2)
  fields = dict(num_classes=7, conv_features=(8, 16, 24, 16, 16), fc_features=(32, 24),
                lrn_alpha_divided_by_n=True, conv1_relu_after_pool=True, conv2_rnorm=True)
  torch.manual_seed(1)
  images_NCHW = 60.0 * torch.randn(2, 3, 227, 227)  # Pixel scale: the normalizations act.
  with torch.no_grad():
    expected = reference.eval()(images_NCHW).numpy()
  images = images_NCHW.numpy().transpose(0, 2, 3, 1)
  run = lambda **switches: np.asarray(models.AlexNet(**{**fields, **switches}).apply(
      {'params': params}, images))
  got = run()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  for wrong in ({'conv1_relu_after_pool': False}, {'conv2_rnorm': False}):
    assert np.abs(run(**wrong) - expected).max() > 100 * np.abs(got - expected).max(), wrong


CONV, FC = (48, 128, 192, 192, 128), (512, 512)  # Half and an eighth of the paper's: fast.


@functools.cache  # Each init compiles the whole forward pass: seconds.
def _params(weight_init, towers=2, conv=CONV, fc=FC):
  model = models.AlexNet(weight_init=weight_init, towers=towers, conv_features=conv,
                         fc_features=fc)
  images = np.zeros((1, 67, 67, 3))  # pool5: 1x1.
  return jax.jit(lambda: model.init(jax.random.key(0), images)['params'])()


# (weight std, bias) per layer, as docs/paper.md's tables give them.
CUDA_CONVNET2 = {'conv1': (0.01, 0), 'conv2': (0.01, 1), 'conv3': (0.03, 0), 'conv4': (0.03, 1),
                 'conv5': (0.03, 1), 'fc6': (0.01, 1), 'fc7': (0.01, 1), 'fc8': (0.01, 0)}
CAFFE = {'conv1': (0.01, 0), 'conv2': (0.01, 0.1), 'conv3': (0.01, 0), 'conv4': (0.01, 0.1),
         'conv5': (0.01, 0.1), 'fc6': (0.005, 0.1), 'fc7': (0.005, 0.1), 'fc8': (0.01, 0)}


@pytest.mark.parametrize('scheme,table', [('cuda_convnet2', CUDA_CONVNET2), ('caffe', CAFFE)])
def test_normal_init_schemes(scheme, table):
  params = _params(scheme)
  for layer, (std, bias) in table.items():
    assert abs(float(np.std(params[layer]['kernel'])) - std) < 0.02 * std, layer
    np.testing.assert_array_equal(params[layer]['bias'], np.float32(bias), err_msg=layer)


def test_pytorch_init_is_uniform_within_one_over_root_fan_in():
  # One tower and two (fc8 sums both towers: its fan-in is all of fc7's units, not one tower's).
  for towers in (1, 2):
    params = _params('pytorch', towers)
    fan_in = {'conv1': 11 * 11 * 3, 'conv2': 25 * CONV[0] // towers, 'conv3': 9 * CONV[1],
              'conv4': 9 * CONV[2] // towers, 'conv5': 9 * CONV[3] // towers,
              'fc6': CONV[4], 'fc7': FC[0], 'fc8': FC[1]}
    for layer, n in fan_in.items():
      bound = 1 / math.sqrt(n)
      for kind in ('kernel', 'bias'):
        values = np.asarray(params[layer][kind])
        assert np.abs(values).max() <= bound, (towers, layer, kind)
        assert np.abs(values).max() > 0.9 * bound, (towers, layer, kind)  # Not a smaller bound.
      std = float(np.std(params[layer]['kernel']))
      assert abs(std - bound / math.sqrt(3)) < 0.03 * bound, (towers, layer)


def test_pytorch_scheme_matches_torchs_own_layers():
  torch.manual_seed(0)
  linear, conv = nn.Linear(FC[1], 1000), nn.Conv2d(CONV[0], CONV[1], 5)
  params = _params('pytorch', 1)
  for ours, theirs in ((params['fc8'], linear), (params['conv2'], conv)):
    for kind, tensor in (('kernel', theirs.weight), ('bias', theirs.bias)):
      ours_max, torch_max = np.abs(ours[kind]).max(), tensor.detach().abs().max().item()
      assert abs(ours_max - torch_max) < 0.01 * torch_max, kind

