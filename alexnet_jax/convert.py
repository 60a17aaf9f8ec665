"""Imports pretrained AlexNet weights into an Orbax checkpoint the other commands accept.

    python -m alexnet_jax.convert --torchvision=alexnet-owt-7be5be79.pth \
        --config=configs/torchvision.py --workdir=workdirs/tv
    python -m alexnet_jax.convert --caffe=bvlc_alexnet.npz --caffe_mean=ilsvrc_2012_mean.npy \
        --config=configs/bvlc_alexnet.py --workdir=workdirs/bvlc_alexnet

--config: the model the weights belong to (its widths and class count are then read from the
  weights); overrides such as --config.input.image_size=... apply as for run.py.
--torchvision: a torchvision `alexnet` state_dict (.pth, loaded with torch; or .npz of the same
  keys). Config: configs/torchvision.py.
--caffe: Caffe's two-group `bvlc_alexnet` as .npz with keys `conv1.weight`, `conv1.bias`, ...,
  `fc8.bias`, each blob as pycaffe holds it:
      np.savez('bvlc_alexnet.npz', **{f'{name}.{kind}': net.params[name][i].data
                                      for name in net.params
                                      for i, kind in enumerate(('weight', 'bias'))})
  Model: configs/bvlc_alexnet.py; each group becomes a tower.
--caffe_mean: the mean image the Caffe model subtracts, as pycaffe holds it ([3, 256, 256], BGR,
  0-255: Caffe's python/caffe/imagenet/ilsvrc_2012_mean.npy); stored in the workdir as mean.npy.
  Without it the model subtracts that file's per-channel means (CAFFE_MEAN_BGR).
Widths and class count are read from the weights; the input convention (config.input: channel
order, pixel scale, mean, std, resize, crop, test views) is the source's, from its config file,
so `predict` feeds the model what it was trained on, with no ImageNet data on the machine. The
workdir gets `config.json` and step 0 in `checkpoints/`, so predict, features, figures, ensemble,
fine-tuning (config.finetune.init_from) and `run.py` itself (which resumes from step 0) all take
it.

Both sources store PyTorch/Caffe layouts, converted here:
  conv weights [out, in/groups, kh, kw] (OIHW)  -> per tower [towers, kh, kw, in/groups, out/towers]
  dense weights [out, in]                       -> [towers, in, out/towers] (x @ W, not W @ x)
  fc6's input flattened as (C, H, W) from NCHW  -> rows reordered to this model's NHWC (H, W, C)
  fc8 [classes, in]                             -> [towers, in/towers, classes]: tower t's rows
"""

import math
import os
from collections.abc import Mapping

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import (checkpoint, cli, data, models, optim, recipes, registry, train,  # noqa: E402
                         trees)
from alexnet_jax.errors import UserError  # noqa: E402
from alexnet_jax.workdir import Workdir  # noqa: E402

LAYERS = models.LAYERS
# torchvision.models.AlexNet's module indices in `features` and `classifier`.
TORCHVISION_NAMES = {'conv1': 'features.0', 'conv2': 'features.3', 'conv3': 'features.6',
                     'conv4': 'features.8', 'conv5': 'features.10', 'fc6': 'classifier.1',
                     'fc7': 'classifier.4', 'fc8': 'classifier.6'}


def _conv(weight_OIHW: np.ndarray, towers: int) -> np.ndarray:
  out, in_per_group, kh, kw = weight_OIHW.shape
  return weight_OIHW.reshape(towers, out // towers, in_per_group, kh, kw).transpose(0, 3, 4, 2, 1)


def _dense(weight_OI: np.ndarray, towers: int) -> np.ndarray:
  out, inputs = weight_OI.shape
  return weight_OI.reshape(towers, out // towers, inputs).transpose(0, 2, 1)


def convert(weights: Mapping[str, tuple[np.ndarray, np.ndarray]], towers: int) -> dict:
  """{layer: (weight, bias)} in PyTorch/Caffe layout -> this project's parameter tree."""
  missing = [layer for layer in LAYERS if layer not in weights]
  if missing:
    raise UserError(f'the weights file has no {", ".join(missing)}.')
  w = {layer: np.asarray(weights[layer][0], np.float32) for layer in LAYERS}
  b = {layer: np.asarray(weights[layer][1], np.float32) for layer in LAYERS}
  params = {}
  for layer in LAYERS[:5]:
    params[layer] = {'kernel': _conv(w[layer], towers), 'bias': b[layer].reshape(towers, -1)}
  # fc6 reads pool5, flattened (C, H, W) by PyTorch/Caffe and (H, W, C) by this NHWC model.
  channels = w['conv5'].shape[0]
  side = math.isqrt(w['fc6'].shape[1] // channels)
  if side * side * channels != w['fc6'].shape[1]:
    raise UserError(f'fc6 takes {w["fc6"].shape[1]} inputs, not a square map of conv5\'s '
                    f'{channels} channels.')
  fc6 = w['fc6'].reshape(-1, channels, side, side).transpose(0, 2, 3, 1)
  fc6 = fc6.reshape(-1, w['fc6'].shape[1])
  params['fc6'] = {'kernel': _dense(fc6, towers), 'bias': b['fc6'].reshape(towers, -1)}
  params['fc7'] = {'kernel': _dense(w['fc7'], towers), 'bias': b['fc7'].reshape(towers, -1)}
  classes = w['fc8'].shape[0]
  fc8 = w['fc8'].T.reshape(towers, -1, classes)  # Tower t holds the rows of its fc7 channels.
  params['fc8'] = {'kernel': fc8, 'bias': b['fc8']}
  return params


def torchvision_weights(state_dict: Mapping[str, np.ndarray]) -> dict:
  return {layer: (state_dict[f'{name}.weight'], state_dict[f'{name}.bias'])
          for layer, name in TORCHVISION_NAMES.items()
          if f'{name}.weight' in state_dict and f'{name}.bias' in state_dict}


def caffe_weights(blobs: Mapping[str, np.ndarray]) -> dict:
  return {layer: (blobs[f'{layer}.weight'], blobs[f'{layer}.bias']) for layer in LAYERS
          if f'{layer}.weight' in blobs and f'{layer}.bias' in blobs}


def model_config_for(params: dict, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`base` with the widths and class count of `params`."""
  config = base.copy_and_resolve_references()
  towers = params['conv1']['kernel'].shape[0]
  config.model.towers = towers
  config.model.conv_features = tuple(params[f'conv{i}']['kernel'].shape[-1] * towers
                                     for i in range(1, 6))
  config.model.fc_features = tuple(params[f'fc{i}']['kernel'].shape[-1] * towers for i in (6, 7))
  config.model.num_classes = params['fc8']['bias'].shape[0]
  return config


def check_shapes(model: models.AlexNet, params: dict, image_size: int, channels: int) -> None:
  """Raises UserError when converted `params` do not have `model`'s parameter shapes."""
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, image_size, image_size, channels), np.float32)))['params']
  trees.check_same_shapes(params, expected, lambda name, got, want: (
      f'{name} has shape {got} after conversion, the model expects {want}: the weights do not '
      'belong to this architecture.'))


MEAN_FILE = 'mean.npy'  # A converted workdir's per-pixel mean image (config.input.mean_file).
# Caffe's ILSVRC-2012 mean image, python/caffe/imagenet/ilsvrc_2012_mean.npy ([3, 256, 256], BGR,
# 0-255), averaged per channel: what a converted Caffe model subtracts without --caffe_mean.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def caffe_mean_image(blob: np.ndarray) -> np.ndarray:
  """float32 [S, S, 3] (BGR, 0-255) from pycaffe's mean layout [3, S, S] or [1, 3, S, S]."""
  blob = np.asarray(blob, np.float32)
  if blob.ndim == 4 and blob.shape[0] == 1:
    blob = blob[0]
  if blob.ndim != 3 or blob.shape[0] != 3 or blob.shape[1] != blob.shape[2]:
    raise UserError(f'the Caffe mean has shape {blob.shape}; expected [3, S, S] or [1, 3, S, S] '
                    '(python/caffe/imagenet/ilsvrc_2012_mean.npy, or caffe.io.blobproto_to_array '
                    'of imagenet_mean.binaryproto).')
  return blob.transpose(1, 2, 0)


def with_caffe_mean(config: ml_collections.ConfigDict, mean_BGR: np.ndarray | None
                    ) -> ml_collections.ConfigDict:
  """`config` (Caffe's convention) subtracting `mean_BGR` [S, S, 3], which write_workdir stores
  as MEAN_FILE; without one, the per-channel means of Caffe's own mean image."""
  config = config.copy_and_resolve_references()
  if mean_BGR is None:
    config.input.mean_subtraction = 'per_channel'
    config.input.mean_values = CAFFE_MEAN_BGR
  else:
    config.input.mean_subtraction = 'per_pixel'
    config.input.mean_file = MEAN_FILE
    config.input.resize_size = mean_BGR.shape[0]
  return config


def write_workdir(workdir: str, config: ml_collections.ConfigDict, params: dict,
                  mean: np.ndarray | None = None) -> None:
  """config.json and checkpoint step 0 (zero optimizer state), as run.py would have written; and
  `mean`, the per-pixel input mean, as MEAN_FILE."""
  model = registry.create_model(config.model)
  check_shapes(model, params, config.input.image_size, params['conv1']['kernel'].shape[-2])
  tx = optim.create_optimizer(config)
  state = train.TrainState(step=np.zeros((), np.int32), params=params, opt_state=tx.init(params))
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(workdir)
  if ckpt.latest_step() is not None:
    raise UserError(f'{workdir} already holds checkpoints; convert into a new --workdir.')
  train.save_checkpoint(ckpt, state, data.Position(), optim.Plateau.from_config(config),
                        config.batch_size)
  ckpt.wait_until_finished()
  ckpt.close()
  if mean is not None:
    np.save(os.path.join(workdir, MEAN_FILE), mean.astype(np.float32))
  Workdir(workdir).write_config(config)


def _load_arrays(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a .npz or a torch state_dict; a damaged file is a UserError naming it."""
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist.')
  if path.endswith('.npz'):
    try:
      with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}
    except Exception as e:  # pylint: disable=broad-except  # zipfile, pickle, numpy errors.
      raise UserError(f'{path} is damaged or not an .npz archive ({_first_sentence(e)}); '
                      'write it again with np.savez.') from e
  try:
    import torch  # Optional: requirements-torch.txt.
  except ImportError as e:
    raise UserError('reading a .pth file needs torch (pip install -r requirements-torch.txt); '
                    'or save the state_dict as .npz.') from e
  try:
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
    return {k: v.numpy() for k, v in state_dict.items()}
  except Exception as e:  # pylint: disable=broad-except  # torch raises many types for this.
    raise UserError(f'{path} is damaged or not a torch state_dict ({_first_sentence(e)}); '
                    'download it again.') from e


def _load_mean(path: str) -> np.ndarray:
  """The .npy array of --caffe_mean; UserError naming the file when it is missing or damaged."""
  try:
    return np.load(path)
  except FileNotFoundError as e:
    raise UserError(f'{path} does not exist.') from e
  except Exception as e:  # pylint: disable=broad-except  # numpy/pickle errors.
    raise UserError(f'{path} is damaged or not an .npy array ({_first_sentence(e)}); '
                    'write it again with np.save.') from e


def _first_sentence(error: Exception) -> str:
  text = (str(error).strip().splitlines() or [''])[0].split('. ')[0][:150]
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


FLAGS = flags.FLAGS
# Each source's config file (the architecture, for the error that asks for it) and its towers.
SOURCE_CONFIGS = {'torchvision': ('configs/torchvision.py', 1),
                  'caffe': ('configs/bvlc_alexnet.py', 2)}
# Set by the conversion itself, from the weights (model_config_for) or --caffe_mean.
_FROM_THE_WEIGHTS = ('model.towers', 'model.conv_features', 'model.fc_features',
                     'model.num_classes')
_FROM_THE_CAFFE_MEAN = ('input.mean_subtraction', 'input.mean_values', 'input.mean_file',
                        'input.resize_size')


def check_source_config(config: ml_collections.ConfigDict, source: str) -> None:
  """UserError unless `config` has the architecture and input convention the `source`
  ('torchvision' | 'caffe') weights were trained with: recipes.RECIPES[source]'s model.* and
  input.* facts, but for what the conversion sets from the weights and the mean. Another
  convention would load and run, and silently predict wrong classes."""
  recipe = recipes.RECIPES[source]
  own = _FROM_THE_WEIGHTS + (_FROM_THE_CAFFE_MEAN if source == 'caffe' else ())
  wrong = [f'{fact.key}={value!r} (the source: {fact.value!r})'
           for fact, value, same in recipes.compare(recipe, config)
           if not same and fact.key.startswith(('model.', 'input.')) and fact.key not in own]
  if wrong:
    raise UserError(f'--config is not the architecture and input convention of {source} weights '
                    f'({"; ".join(wrong[:3])}{"; ..." if len(wrong) > 3 else ""}); pass '
                    f'--config={recipe.config} (overrides of other keys are fine).')


def main(argv):
  del argv
  sources = [name for name in SOURCE_CONFIGS if FLAGS[name].value]
  if len(sources) != 1 or not FLAGS.workdir:
    raise UserError('pass --workdir and exactly one of --torchvision=FILE or --caffe=FILE.npz.')
  source = sources[0]
  config_file, towers = SOURCE_CONFIGS[source]
  config = cli.config_value(example=f'{config_file} (the architecture of the weights)')
  arrays = _load_arrays(FLAGS[source].value)
  weights = torchvision_weights(arrays) if source == 'torchvision' else caffe_weights(arrays)
  params = convert(weights, towers)
  config, mean = model_config_for(params, config), None
  check_source_config(config, source)
  if source == 'caffe':
    mean = caffe_mean_image(_load_mean(FLAGS.caffe_mean)) if FLAGS.caffe_mean else None
    config = with_caffe_mean(config, mean)
    if mean is None:
      print(f'no --caffe_mean: subtracting its per-channel values {CAFFE_MEAN_BGR} (BGR)')
  write_workdir(FLAGS.workdir, config, params, mean)
  print(f'wrote {FLAGS.workdir}/config.json and {FLAGS.workdir}/checkpoints/0')


def define_flags() -> None:
  cli.define_config_flag(None, 'The architecture of the weights: configs/torchvision.py or '
                         'configs/bvlc_alexnet.py.')
  flags.DEFINE_string('torchvision', None, 'torchvision alexnet state_dict (.pth or .npz).')
  flags.DEFINE_string('caffe', None, 'bvlc_alexnet blobs as .npz (see the module docstring).')
  flags.DEFINE_string('caffe_mean', None, "Caffe's mean image as .npy, [3, 256, 256] BGR "
                      '(python/caffe/imagenet/ilsvrc_2012_mean.npy); default: its channel means.')
  flags.DEFINE_string('workdir', None, 'New directory for config.json and the checkpoint.')


if __name__ == '__main__':
  cli.run(main, define_flags)
