"""Imported weights, end to end, on real photographs and with no ImageNet data on the machine.

A torchvision-layout AlexNet and a Caffe-layout one (tests/convert_test.py's PyTorch modules,
seeded random weights scaled so that the classes are far from uniform) are saved as the files a
user downloads, converted with `python -m alexnet_jax.convert`, and `python -m alexnet_jax.predict`
runs on scikit-image's photographs written to files. Its top-5 classes and probabilities must be
those of each source's own preprocessing, written here independently, + the PyTorch model on the
same files: torchvision's transforms in PIL/torch (Resize(256), CenterCrop(224), ToTensor,
Normalize) and Caffe's transform in numpy (BGR, 256x256 warp with OpenCV's bilinear, the mean
image, the centre 227 crop). A swapped channel order, a skipped std or a per-channel mean in place
of the mean image must each fail the same comparison.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

from alexnet_jax import convert, trained_model
from alexnet_jax.data import convention
from tests.convert_test import CaffeAlexNet, TorchvisionAlexNet, _numpy_state
from tests.convention_test import _bilinear_half_pixel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = ('chelsea', 'coffee', 'astronaut', 'rocket')
CONV, FC, CLASSES = (16, 32, 48, 32, 32), (64, 64), 1000  # Small widths; ImageNet's classes.
TV_MEAN, TV_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
PROBABILITY_TOLERANCE = 1e-4  # predict prints two decimals of a percent: 5e-5 of rounding.


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  directory = tmp_path_factory.mktemp('photos')
  paths = []
  for name in PHOTOS:
    paths.append(str(directory / f'{name}.png'))  # PNG: every decoder reads the same pixels.
    Image.fromarray(getattr(skimage.data, name)()).save(paths[-1])
  return paths


def _scaled_random_weights(module: nn.Module, inputs: torch.Tensor) -> nn.Module:
  """He-scaled weights (activations keep their size through the layers), fc8 scaled so that
  the logits of `inputs` have std 3: confident, distinct classes, as a trained net gives."""
  torch.manual_seed(0)
  with torch.no_grad():
    for layer in module.modules():
      if isinstance(layer, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(layer.weight)
        nn.init.normal_(layer.bias, std=0.1)
    last = [layer for layer in module.modules() if isinstance(layer, nn.Linear)][-1]
    scale = 3.0 / module.eval()(inputs).std().item()
    last.weight *= scale
    last.bias *= scale
  return module.eval()


def _run(module: str, *args: str, data_dir: str) -> str:
  env = {**os.environ, 'TFDS_DATA_DIR': data_dir, 'XLA_FLAGS': ''}  # An empty TFDS data dir.
  result = subprocess.run([sys.executable, '-m', f'alexnet_jax.{module}', *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _predictions(stdout: str) -> dict[str, list[tuple[str, float]]]:
  """{file: [(class, probability), ...]} from predict's output."""
  blocks = re.split(r'^(?=\S)', stdout, flags=re.M)[1:]
  return {block.splitlines()[0]: [(m[1].strip(), float(m[2]) / 100) for m in re.finditer(
      r'^  \d\. (.+?) +(\d+\.\d\d)%$', block, re.M)] for block in blocks}


def _top5(probabilities: np.ndarray, names: tuple[str, ...]) -> list[tuple[str, float]]:
  order = np.argsort(-probabilities, kind='stable')[:5]
  return [(names[c], float(probabilities[c])) for c in order]


def _assert_same_predictions(printed, expected):
  assert [name for name, _ in printed] == [name for name, _ in expected]
  np.testing.assert_allclose([p for _, p in printed], [p for _, p in expected],
                             atol=PROBABILITY_TOLERANCE)


def _differs(printed, expected) -> bool:
  names_differ = [name for name, _ in printed] != [name for name, _ in expected]
  return names_differ or not np.allclose([p for _, p in printed], [p for _, p in expected],
                                         atol=PROBABILITY_TOLERANCE)


def _softmax(logits: torch.Tensor) -> np.ndarray:
  return torch.softmax(logits, dim=-1).numpy()[0]


# --- torchvision --------------------------------------------------------------------------


def torchvision_transform(path: str, channels=(0, 1, 2), std=TV_STD) -> torch.Tensor:
  """torchvision's eval transform on a PIL image (train.py @ bde124e lines 121-126): Resize(256)
  (_compute_resized_output_size: the longer side truncated; PIL bilinear), CenterCrop(224)
  (int(round((size - 224) / 2))), ToTensor (/255, CHW), Normalize(mean, std)."""
  image = Image.open(path).convert('RGB')
  width, height = image.size
  short, long = min(width, height), max(width, height)
  if short != 256:
    size = (256, int(256 * long / short)) if width <= height else (int(256 * long / short), 256)
    image = image.resize(size, Image.BILINEAR)
  width, height = image.size
  top, left = int(round((height - 224) / 2.0)), int(round((width - 224) / 2.0))
  pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
  pixels = (pixels - TV_MEAN) / std
  return torch.tensor(pixels[..., list(channels)].transpose(2, 0, 1)[None], dtype=torch.float32)


@pytest.fixture(scope='module')
def torchvision_model(photos):
  inputs = torch.cat([torchvision_transform(p) for p in photos])
  return _scaled_random_weights(TorchvisionAlexNet(CONV, FC, CLASSES), inputs)


def test_torchvision_weights_predict_as_torchvision(torchvision_model, photos, tmp_path):
  torch.save(torchvision_model.state_dict(), tmp_path / 'alexnet.pth')
  np.savez(tmp_path / 'alexnet.npz', **_numpy_state(torchvision_model))  # What needs no torch.
  data_dir, workdir = str(tmp_path / 'no_tfds_data'), tmp_path / 'converted'
  _run('convert', f'--torchvision={tmp_path / "alexnet.pth"}', '--config=configs/torchvision.py',
       f'--workdir={workdir}', data_dir=data_dir)
  printed = _predictions(_run('predict', f'--workdir={workdir}', *photos, data_dir=data_dir))
  assert not list((tmp_path / 'no_tfds_data').glob('**/*.tfrecord*'))  # Nothing was prepared.
  # The .npz holds the same arrays as the .pth: a conversion of either is the same from there.
  from_npz = convert._load_arrays(str(tmp_path / 'alexnet.npz'))
  from_pth = convert._load_arrays(str(tmp_path / 'alexnet.pth'))
  assert from_npz.keys() == from_pth.keys()
  for name, array in from_pth.items():
    assert from_npz[name].dtype == array.dtype, name
    np.testing.assert_array_equal(from_npz[name], array, err_msg=name)

  trained = trained_model.load(str(workdir))
  assert list(printed) == photos
  preprocess = convention.offline_preprocessor(trained.config)
  logit_error = probability_error = 0.0
  for path in photos:
    with torch.no_grad():
      logits = torchvision_model(torchvision_transform(path))
      swapped = _softmax(torchvision_model(torchvision_transform(path, (2, 1, 0))))
      no_std = _softmax(torchvision_model(torchvision_transform(path, std=1.0)))
    expected = _top5(_softmax(logits), trained.class_names)
    _assert_same_predictions(printed[path], expected)
    assert _differs(printed[path], _top5(swapped, trained.class_names)), path
    assert _differs(printed[path], _top5(no_std, trained.class_names)), path
    assert expected[0][1] > 0.02  # Far from uniform (1e-3): the comparison can tell.
    # The same in this process, unrounded: logits and all 1000 probabilities.
    ours = np.asarray(trained.model.apply(
        {'params': trained.params}, preprocess(np.asarray(Image.open(path).convert('RGB')))))
    logit_error = max(logit_error, float(np.abs(ours - logits.numpy()).max()))
    probability_error = max(probability_error, float(np.abs(
        _softmax(torch.tensor(ours)) - _softmax(logits)).max()))
  print(f'torchvision: max |logit difference| {logit_error:.1e}, max |probability difference| '
        f'{probability_error:.1e} (logits of std 3)')
  assert logit_error < 1e-4 and probability_error < 1e-5


# --- Caffe ----------------------------------------------------------------------------------


CAFFE_CHANNEL_MEANS = np.array(convert.CAFFE_MEAN_BGR)[:, None, None]  # [3, 1, 1], BGR.


def _caffe_mean() -> np.ndarray:
  """A smooth stand-in for Caffe's ilsvrc_2012_mean.npy: [3, 256, 256], BGR, near its values."""
  y, x = np.mgrid[0:256, 0:256] / 255.0
  return CAFFE_CHANNEL_MEANS + 12 * np.stack([x - 0.5, y - 0.5, x * y - 0.25])


def caffe_transform(path: str, mean_BGR_CHW: np.ndarray, bgr: bool = True) -> torch.Tensor:
  """Caffe's input, independently: OpenCV-style BGR 0-255 pixels, warped to 256x256 with
  INTER_LINEAR (half-pixel bilinear, rounded to 8 bits), minus the mean (per pixel [3, 256,
  256] or per channel [3, 1, 1]), the centre 227x227 crop at (256 - 227) // 2."""
  rgb = np.asarray(Image.open(path).convert('RGB'))
  warped = np.floor(_bilinear_half_pixel(rgb, 256, 256) + 0.5)
  chw = (warped[..., ::-1] if bgr else warped).transpose(2, 0, 1) - mean_BGR_CHW
  offset = (256 - 227) // 2
  return torch.tensor(chw[None, :, offset:offset + 227, offset:offset + 227], dtype=torch.float32)


@pytest.fixture(scope='module')
def caffe_model(photos):
  mean = _caffe_mean()
  inputs = torch.cat([caffe_transform(p, mean) for p in photos])
  return _scaled_random_weights(CaffeAlexNet(CONV, FC, CLASSES), inputs)


def _caffe_blobs(module: nn.Module) -> dict[str, np.ndarray]:
  return {k.removeprefix('layers.'): v for k, v in _numpy_state(module).items()}


@pytest.mark.parametrize('with_mean_file', [True, False])
def test_caffe_weights_predict_as_caffe(caffe_model, photos, tmp_path, with_mean_file):
  blobs, mean = tmp_path / 'bvlc_alexnet.npz', _caffe_mean()
  np.savez(blobs, **_caffe_blobs(caffe_model))
  np.save(tmp_path / 'mean.npy', mean)  # pycaffe's layout: [3, 256, 256], BGR.
  workdir, data_dir = tmp_path / 'converted', str(tmp_path / 'no_tfds_data')
  mean_flag = [f'--caffe_mean={tmp_path / "mean.npy"}'] if with_mean_file else []
  _run('convert', f'--caffe={blobs}', *mean_flag, '--config=configs/bvlc_alexnet.py',
       f'--workdir={workdir}', data_dir=data_dir)
  printed = _predictions(_run('predict', f'--workdir={workdir}', *photos, data_dir=data_dir))

  trained = trained_model.load(str(workdir))
  names, preprocess = trained.class_names, convention.offline_preprocessor(trained.config)
  logit_error = probability_error = 0.0
  per_channel = CAFFE_CHANNEL_MEANS
  subtracted = mean if with_mean_file else per_channel
  for path in photos:
    with torch.no_grad():
      expected = _top5(_softmax(caffe_model(caffe_transform(path, subtracted))), names)
      rgb = _top5(_softmax(caffe_model(caffe_transform(path, subtracted, bgr=False))), names)
      other_mean = _top5(_softmax(caffe_model(caffe_transform(
          path, per_channel if with_mean_file else mean))), names)
    _assert_same_predictions(printed[path], expected)
    assert _differs(printed[path], rgb), path
    if with_mean_file:  # The mean image matters: its channel averages are not enough.
      assert _differs(printed[path], other_mean), path
    assert expected[0][1] > 0.02
    with torch.no_grad():
      logits = caffe_model(caffe_transform(path, subtracted)).numpy()
    ours = np.asarray(trained.model.apply(
        {'params': trained.params}, preprocess(np.asarray(Image.open(path).convert('RGB')))))
    logit_error = max(logit_error, float(np.abs(ours - logits).max()))
    probability_error = max(probability_error, float(np.abs(
        _softmax(torch.tensor(ours)) - _softmax(torch.tensor(logits))).max()))
  print(f'caffe ({"mean image" if with_mean_file else "channel means"}): max |logit difference| '
        f'{logit_error:.1e}, max |probability difference| {probability_error:.1e}')
  assert logit_error < 1e-4 and probability_error < 1e-5
