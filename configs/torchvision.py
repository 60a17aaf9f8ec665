"""torchvision's `alexnet` ("one weird trick" variant): one tower of 64-192-384-256-256, no LRN.

    python -m alexnet_jax.convert --torchvision=alexnet-owt-7be5be79.pth \
        --workdir=workdirs/torchvision

61,100,840 parameters; conv1 padded by 2 on 224x224 inputs, so pool5 is 6x6 and torchvision's
adaptive average pool to 6x6 is the identity. Dropout on the inputs of fc6 and fc7.
"""

import ml_collections

from configs import imagenet


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  config.model.towers = 1
  config.model.conv_features = (64, 192, 384, 256, 256)
  config.model.conv1_padding = 2
  config.model.lrn = False
  config.model.dropout_placement = 'before'
  config.model.init = 'he'
  config.input.image_size = 224
  return config
