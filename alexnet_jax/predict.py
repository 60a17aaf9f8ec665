"""Top-5 predictions for image files (the paper's Fig. 4, left):

    python -m alexnet_jax.predict --workdir=workdirs/default shirt.png boot.jpg

Each file is decoded as an image viewer shows it (alexnet_jax.data.images: EXIF orientation, 16-bit
and float samples, palettes, transparency over white, ICC profiles), then gets the evaluation
preprocessing of the model's data set (the centre view, or the ten crops when the config evaluates
with ten; for ImageNet models the input convention of config.input, alexnet_jax/data/convention.py),
the softmax averaged over the crops, and prints

    shirt.png
      1. Shirt              71.20%
      ...

in the order the files were given. A file that cannot be read or decoded gets one line on stderr
(`error: FILE: reason`); the others are still processed, and the exit status is 1.
"""

import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import cli, data, trained_model  # noqa: E402
from alexnet_jax.data import images  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402


def make_predictor(trained: trained_model.TrainedModel) -> Callable[[np.ndarray], np.ndarray]:
  """[crops, H, W, C] -> class probabilities, the softmax averaged over the crops."""
  @jax.jit
  def probabilities(crops):
    logits = trained.model.apply({'params': trained.params}, crops)
    return jax.nn.softmax(logits, axis=-1).mean(axis=0)
  return lambda crops: np.asarray(probabilities(crops))


def predict_files(trained: trained_model.TrainedModel,
                  preprocess_image: Callable[[np.ndarray], np.ndarray], paths: Sequence[str],
                  top_k: int = 5, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
  """Prints the top-k classes of each image; returns how many files failed."""
  predict = make_predictor(trained)
  width = max(len(name) for name in trained.class_names)
  failed = 0
  for path in paths:
    try:
      crops = preprocess_image(images.decode_image(path, trained.image_shape[-1]))
    except UserError as e:
      print(f'error: {path}: {e}', file=err)
      failed += 1
      continue
    probs = predict(crops)
    order = np.argsort(-probs, kind='stable')[:top_k]
    lines = [f'  {rank}. {trained.class_names[c]:<{width}} {100 * probs[c]:6.2f}%'
             for rank, c in enumerate(order, 1)]
    print('\n'.join([path] + lines), file=out, flush=True)
  return failed


def image_preprocessor(config: ml_collections.ConfigDict) -> Callable[[np.ndarray], np.ndarray]:
  """The config's evaluation input for one decoded image. Without the data set where the config
  carries its whole input convention (a converted model: the mean in the config or a file of
  the workdir); otherwise the data set's own, which may need it prepared (a training mean)."""
  from alexnet_jax.data import convention  # pylint: disable=import-outside-toplevel  (TensorFlow)
  preprocess = convention.offline_preprocessor(config)
  if preprocess is not None:
    return preprocess
  dataset = data.create_dataset(config)
  if dataset.preprocess_image is None:
    raise UserError(f'the {config.dataset} input pipeline offers no single-image '
                    'preprocessing yet, so predict cannot reproduce its evaluation input.')
  return dataset.preprocess_image


FLAGS = flags.FLAGS


def main(argv) -> int:
  paths = argv[1:]
  if not paths:
    raise UserError('no images given: python -m alexnet_jax.predict --workdir=DIR IMAGE...')
  trained = cli.load_trained_model()
  failed = predict_files(trained, image_preprocessor(trained.config), paths, FLAGS.top_k)
  return 1 if failed else 0


def define_flags() -> None:
  cli.define_trained_model_flags()
  flags.DEFINE_integer('top_k', 5, 'How many classes to print per image.')


if __name__ == '__main__':
  cli.run(main, define_flags, arguments=True)
