"""torchvision's `alexnet` ("one weird trick" variant) expressed with the paper config's switches.

    python -m alexnet_jax.conformance --config=configs/torchvision.py
    python -m alexnet_jax.convert --torchvision=alexnet-owt-7be5be79.pth \
        --config=configs/torchvision.py --workdir=workdirs/tv

One tower of 64-192-384-256-256 kernels, conv1 padded by 2 on 224x224 inputs, no LRN, dropout on
the inputs of fc6 and fc7. torchvision's adaptive 6x6 average pool is an identity at 224x224.
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
  config.input.image_size = 224
  return config
