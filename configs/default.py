"""The embedded default: the paper's AlexNet on Fashion-MNIST, trained in minutes on a laptop CPU.

    python run.py --config=configs/default.py --workdir=workdirs/default

Same layers, towers, LRN, overlapping pools and dropout as the paper; the images are upscaled from
28x28 to INPUT_SIZE and the widths are scaled down so that a 2-core CPU finishes in minutes
(2,340 steps, 5-7 minutes on a 2-core VM; the README gives the command, the measured time and
accuracy, and the commit).
"""

import ml_collections

from configs import imagenet

INPUT_SIZE = 99  # conv1 -> 23, pool -> 11, conv2 -> 11, pool -> 5, conv3-5 -> 5, pool -> 2.


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  config.dataset = 'fashion_mnist'
  config.model.num_classes = 10
  config.model.conv_features = (48, 128, 192, 192, 128)  # Half the paper's widths.
  config.model.fc_features = (1024, 1024)  # A quarter: 10 classes need far fewer.
  # The paper's N(0, 0.01) stalls for a long time (docs/paper.md, Training (§5)).
  config.model.weight_init = 'he'

  config.input = ml_collections.ConfigDict()
  config.input.image_size = INPUT_SIZE
  config.input.random_flip = True  # Horizontal flips, as in the paper.

  config.learning_rate = 0.02  # At 0.01 four epochs underfit (train and test error both ~10%).
  config.lr_schedule = 'cosine'
  config.num_epochs = 5
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
  config.eval_batch_size = 500
  return config
