"""Caffe's `bvlc_alexnet`: the paper's two-group network with Caffe's LRN convention.

    python -m alexnet_jax.convert --caffe=bvlc_alexnet.npz --config=configs/bvlc_alexnet.py \
        --workdir=workdirs/bvlc_alexnet

Groups 2 in conv2, conv4 and conv5 become the two towers. Caffe's LRN window runs across both
groups' channels and divides alpha by the window size, with k=1 (bvlc_alexnet never sets k).
"""

import ml_collections

from configs import imagenet


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  config.model.lrn_scope = 'across_towers'
  config.model.lrn_k = 1.0
  config.model.lrn_alpha_divided_by_n = True
  return config
