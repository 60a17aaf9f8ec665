"""fc7 features (the input of the classifier) for a data set's evaluation split:

    python -m alexnet_jax.features --workdir=workdirs/default --output=fc7_test.npz

writes `features` float32 [N, 4096 or the config's fc7 width] and `labels` int32 [N]. These are
the features the paper's Fig. 4 (right) compares, and what transfer learning reuses. With a
ten-crop evaluation input the features are averaged over the crops.
"""

import os
from collections.abc import Iterator

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import cli, data, models, trained_model  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402

def make_extractor(trained: trained_model.TrainedModel):
  """jitted images [B, H, W, C] -> (features [B, D], logits [B, classes])."""
  layer = trained.model.feature_layer  # The last hidden layer: its activations are the features.
  act = models.ACTIVATIONS[trained.model.activation]

  @jax.jit
  def extract(images):
    logits, state = trained.model.apply(
        {'params': trained.params}, images, mutable=['intermediates'],
        capture_intermediates=lambda module, method: module.name == layer and method == '__call__')
    outputs = state['intermediates'][layer]['__call__'][0]
    # AlexNet's layers return one array per tower; the features are all towers' channels.
    towers = outputs if isinstance(outputs, tuple) else (outputs,)
    return act(jnp.concatenate(towers, axis=-1)), logits
  return extract


def features_of_batches(trained: trained_model.TrainedModel, batches: Iterator[data.Batch],
                        max_examples: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features [N, D], labels [N], images [N, H, W, C]) of the unmasked examples."""
  extract = make_extractor(trained)
  features, labels, images = [], [], []
  count = 0
  for batch in batches:
    batch_images = batch['image']
    if batch_images.ndim == 5:  # A crop axis: average the features over the crops.
      b, crops = batch_images.shape[:2]
      feats = extract(batch_images.reshape((b * crops,) + batch_images.shape[2:]))[0]
      feats = np.asarray(feats).reshape(b, crops, -1).mean(axis=1)
      batch_images = batch_images[:, 0]
    else:
      feats = np.asarray(extract(batch_images)[0])
    keep = batch['mask']
    features.append(feats[keep])
    labels.append(batch['label'][keep])
    images.append(batch_images[keep])
    count += int(keep.sum())
    if 0 < max_examples <= count:
      break
  stop = None if max_examples <= 0 else max_examples
  return (np.concatenate(features)[:stop], np.concatenate(labels)[:stop],
          np.concatenate(images)[:stop])


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.output:
    raise UserError('--output=FILE.npz is required.')
  trained = cli.load_trained_model()
  dataset = data.create_dataset(trained.config)
  features, labels, _ = features_of_batches(trained, dataset.eval_batches[''](),
                                            FLAGS.max_examples)
  np.savez(FLAGS.output, features=features.astype(np.float32), labels=labels)
  print(f'wrote {features.shape[0]} x {features.shape[1]} features to {FLAGS.output}')


def define_flags() -> None:
  cli.define_trained_model_flags()
  flags.DEFINE_string('output', None, 'The .npz file to write.')
  flags.DEFINE_integer('max_examples', -1, '-1: the whole evaluation split.')


if __name__ == '__main__':
  cli.run(main, define_flags)
