"""Transfer learning on Fashion-MNIST: train on classes 0-4, fine-tune on classes 5-9.

    python run.py --config=configs/finetune_fashion_mnist.py:pretrain --workdir=workdirs/ft_source
    python run.py --config=configs/finetune_fashion_mnist.py:finetune --workdir=workdirs/ft_frozen \
        --config.finetune.init_from=workdirs/ft_source
    python run.py --config=configs/finetune_fashion_mnist.py:finetune_all \
        --workdir=workdirs/ft_all --config.finetune.init_from=workdirs/ft_source
    python run.py --config=configs/finetune_fashion_mnist.py:scratch --workdir=workdirs/ft_scratch

pretrain: classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat) from scratch.
finetune: classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), conv1-conv5 frozen at the
  source's weights, fc6/fc7 starting from them, a new 5-way fc8.
finetune_all: the same with nothing frozen.  scratch: classes 5-9 from a random init.
The runs are short on purpose (the comparison, not the best accuracy); measured numbers are in
docs/using_a_trained_model.md.
"""

import ml_collections

from alexnet_jax import models
from configs import default

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


def get_config(variant: str = 'finetune') -> ml_collections.ConfigDict:
  config = default.get_config()
  config.input.image_size = 67  # The smallest input AlexNet's pools allow: seconds per step.
  config.lr_schedule = 'cosine'
  config.learning_rate = 0.01
  config.num_train_steps = 300  # Steps, not epochs: the variants are compared at equal cost.
  config.eval_every_steps = 1000  # Only at the end.
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 50

  config.finetune = ml_collections.ConfigDict()
  config.finetune.init_from = ml_collections.config_dict.placeholder(str)  # Source workdir.
  config.finetune.reinit = ('fc8',)  # The new classifier: 5 classes, fresh weights.
  config.finetune.freeze = ()  # Layers whose weights never change.

  if variant == 'pretrain':
    config.input.classes = SOURCE_CLASSES
  elif variant in ('finetune', 'finetune_all', 'scratch'):
    config.input.classes = TARGET_CLASSES
    config.num_train_steps = 100
    if variant != 'scratch':
      config.finetune.init_from = 'workdirs/ft_source'
    if variant == 'finetune':
      config.finetune.freeze = models.CONV_LAYERS
  else:
    raise ValueError(f'unknown variant {variant!r}: pretrain | finetune | finetune_all | scratch')
  return config
