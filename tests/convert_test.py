"""The weight converter: this model's outputs equal PyTorch's on the same weights and input.

PyTorch is the independent reference (requirements-torch.txt, installed by `make test`). Both
layouts matter: torchvision's single tower (NCHW/OIHW, fc6 flattened C,H,W) and a Caffe-style
two-group net (grouped weights split into towers, Caffe's LRN: alpha/n, k=1, across groups).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from alexnet_jax import convert, registry, trained_model
from alexnet_jax.errors import UserError
from configs import bvlc_alexnet, imagenet, torchvision

CONV = (8, 16, 24, 16, 16)  # Tiny widths: the test is about layouts, not size.
FC = (32, 24)
CLASSES = 7


class TorchvisionAlexNet(nn.Module):
  """torchvision.models.AlexNet's code with the widths as arguments (same module indices)."""

  def __init__(self, conv=CONV, fc=FC, num_classes=CLASSES):
    super().__init__()
    c1, c2, c3, c4, c5 = conv
    self.features = nn.Sequential(
        nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(p=0.5), nn.Linear(c5 * 6 * 6, fc[0]), nn.ReLU(inplace=True),
        nn.Dropout(p=0.5), nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True),
        nn.Linear(fc[1], num_classes))

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class CaffeAlexNet(nn.Module):
  """bvlc_alexnet's deploy net: groups 2 in conv2/4/5, LRN(5, 1e-4, 0.75, k=1) before pool 1-2."""

  def __init__(self, conv=CONV, fc=FC, num_classes=CLASSES):
    super().__init__()
    c1, c2, c3, c4, c5 = conv
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # Divides alpha by 5.
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # Caffe rounds pooled sizes up.
    self.layers = nn.ModuleDict({
        'conv1': nn.Conv2d(3, c1, 11, stride=4),
        'conv2': nn.Conv2d(c1, c2, 5, padding=2, groups=2),
        'conv3': nn.Conv2d(c2, c3, 3, padding=1),
        'conv4': nn.Conv2d(c3, c4, 3, padding=1, groups=2),
        'conv5': nn.Conv2d(c4, c5, 3, padding=1, groups=2), 'fc6': nn.Linear(c5 * 36, fc[0]),
        'fc7': nn.Linear(fc[0], fc[1]), 'fc8': nn.Linear(fc[1], num_classes)})
    self.lrn1, self.lrn2, self.pool1, self.pool2, self.pool5 = lrn(), lrn(), pool(), pool(), pool()

  def forward(self, x):
    L = self.layers
    x = self.pool1(self.lrn1(torch.relu(L['conv1'](x))))
    x = self.pool2(self.lrn2(torch.relu(L['conv2'](x))))
    x = torch.relu(L['conv4'](torch.relu(L['conv3'](x))))
    x = self.pool5(torch.relu(L['conv5'](x))).flatten(1)
    return L['fc8'](torch.relu(L['fc7'](torch.relu(L['fc6'](x)))))


def _numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _outputs(torch_model, model, params, size, scale):
  torch.manual_seed(1)
  images_NCHW = scale * torch.randn(2, 3, size, size)
  with torch.no_grad():
    expected = torch_model.eval()(images_NCHW).numpy()
  images_NHWC = jnp.asarray(images_NCHW.numpy().transpose(0, 2, 3, 1))
  return np.asarray(model.apply({'params': params}, images_NHWC)), expected


def test_torchvision_layout_gives_torchs_outputs():
  torch.manual_seed(0)
  reference = TorchvisionAlexNet()
  params = convert.convert(convert.torchvision_weights(_numpy_state(reference)), towers=1)
  config = convert.model_config_for(params, torchvision.get_config())
  assert tuple(config.model.conv_features) == CONV and config.model.num_classes == CLASSES
  got, expected = _outputs(reference, registry.create_model(config.model), params, 224, 1.0)
  assert np.abs(expected).max() > 1e-3  # A forward pass that did not vanish.
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_caffe_two_group_layout_gives_torchs_outputs():
  torch.manual_seed(0)
  reference = CaffeAlexNet()
  blobs = {f'{k.removeprefix("layers.")}': v for k, v in _numpy_state(reference).items()}
  params = convert.convert(convert.caffe_weights(blobs), towers=2)
  config = convert.model_config_for(params, bvlc_alexnet.get_config())
  assert params['conv2']['kernel'].shape == (2, 5, 5, 4, 8)  # Each group is one tower.
  # Pixel-scale inputs (Caffe's 0-255 means) make the LRN constants matter.
  got, expected = _outputs(reference, registry.create_model(config.model), params, 227, 50.0)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # The test can tell the LRN conventions apart: the paper's (alpha not divided by n) differs.
  config.model.lrn_alpha_divided_by_n = False
  paper_lrn, _ = _outputs(reference, registry.create_model(config.model), params, 227, 50.0)
  assert np.abs(paper_lrn - expected).max() > 100 * np.abs(got - expected).max()


def test_torchvision_config_has_torchvisions_parameter_count():
  model = registry.create_model(torchvision.get_config().model)
  shapes = trained_model.abstract_params(model, (224, 224, 3))
  # docs/paper.md, Counts.
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(shapes)) == 61_100_840


def test_written_workdir_loads_back(tmp_path):
  torch.manual_seed(0)
  reference = TorchvisionAlexNet()
  params = convert.convert(convert.torchvision_weights(_numpy_state(reference)), towers=1)
  config = convert.model_config_for(params, torchvision.get_config())
  config.model.num_classes = 1000  # imagenet2012's class count, so the names match.
  params['fc8'] = {'kernel': np.zeros((1, FC[1], 1000), np.float32),
                   'bias': np.zeros(1000, np.float32)}
  convert.write_workdir(str(tmp_path), config, params)
  loaded = trained_model.load(str(tmp_path))
  assert loaded.step == 0 and len(loaded.class_names) == 1000
  # ImageNet's WordNet IDs, each with its English name (the classes' published order).
  assert loaded.class_names[:2] == ('tench (n01440764)', 'goldfish (n01443537)')
  assert loaded.class_names[281] == 'tabby (n02123045)'
  jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
  with pytest.raises(UserError, match='already holds'):
    convert.write_workdir(str(tmp_path), config, params)


def test_wrong_architecture_is_a_user_error():
  torch.manual_seed(0)
  state = _numpy_state(TorchvisionAlexNet())
  del state['classifier.4.bias']
  with pytest.raises(UserError, match='fc7'):
    convert.convert(convert.torchvision_weights(state), towers=1)


@pytest.mark.parametrize('source, own', [('torchvision', torchvision), ('caffe', bvlc_alexnet)])
def test_only_the_sources_own_convention_is_accepted(source, own):
  torch.manual_seed(0)
  params = convert.convert(convert.torchvision_weights(_numpy_state(TorchvisionAlexNet())), 1)
  convert.check_source_config(convert.model_config_for(params, own.get_config()), source)
  # The paper's config loads these weights too (227 input, no padding: the same shapes), but its
  # LRN, input scale and mean are not the ones the weights were trained with.
  with pytest.raises(UserError, match=rf'not the architecture and input convention of {source} '
                                      rf'weights \(model\.\w+=.*pass --config=configs/'):
    convert.check_source_config(convert.model_config_for(params, imagenet.get_config()), source)
