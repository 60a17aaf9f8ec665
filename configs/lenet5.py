"""LeNet-5 on Fashion-MNIST, the baseline AlexNet is compared with (docs/using_a_trained_model.md).

    python run.py --config=configs/lenet5.py --workdir=workdirs/lenet5

Same data, optimizer and runner as configs/default.py; only the model and the input size change.
"""

import ml_collections

from alexnet_jax import registry
from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = registry.model_config('lenet5')  # tanh, as LeCun et al. (1998).
  config.input.image_size = 32  # LeNet-5's input: the 28x28 images resized to 32x32.
  config.input.random_flip = False  # LeNet-5 trained without augmentation.
  return config
