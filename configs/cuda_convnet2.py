"""Krizhevsky's own code: cuda-convnet2's 2-GPU model file, as its own parser reads it.

    python run.py --config=configs/cuda_convnet2.py --workdir=workdirs/cuda_convnet2 \
        --config.manual_dir=/path/with/ILSVRC2012_tars

Files of akrizhevsky/cuda-convnet2 @ 3238bf0: "layers cfg" is layers/layers-imagenet-2gpu-model.cfg,
"params cfg" layers/layer-params-imagenet-2gpu-model.cfg (docs/paper.md, "Where Krizhevsky's code
differs from the paper"). What differs from the paper: LRN alpha 1e-4 divided by n (2e-5 on the
sum), conv1's ReLU after pool1 (LRN sees signed responses), a same-map `rnorm` after conv2's LRN,
initW 0.03 in conv3-5, biases at twice the learning rate without weight decay, a 4-step
exponential learning rate from 0.02, and the data flags' defaults: no colour noise, centre-crop
test. Not reproduced (alexnet_jax/recipes.py lists them): the biases' own two-step schedule, the
mean image cropped at the centre for every crop, its colour-noise formula. The crop size, batch
and epochs are command-line flags the repository does not record: 227 (see
docs/paper.md, "Input size: 224 or 227"), --mini's default 128, the paper's 90 epochs.
"""

import ml_collections

from configs import imagenet

# dexp[base=0.02;tgtFactor=250;numSteps=4] (params cfg line 2): x250^(-1/3) at each quarter.
LR_STEP_FACTOR = 250.0 ** (-1 / 3)


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  m = config.model  # Widths, towers, pools, dropout as the paper (layers cfg lines 9-294).
  m.lrn_scope = 'per_tower'  # rnorm1a reads conv1a only: layers cfg lines 35-45, 95-105.
  m.lrn_n = 5  # size=5: layers cfg lines 39, 99.
  m.lrn_alpha = 1e-4  # scale=0.0001: params cfg line 157,
  m.lrn_alpha_divided_by_n = True  # divided by size by the parser: layer.py line 1331.
  m.lrn_beta = 0.75  # pow=0.75: params cfg line 158.
  m.lrn_k = 2.0  # minDiv=2: params cfg line 159 (default 1: layer.py line 1333).
  m.conv1_relu_after_pool = True  # conv1a has no neuron, pool1a neuron=relu: layers cfg 9-63.
  m.conv2_rnorm = True  # cnorm2a/b (type=rnorm): layers cfg 107-117, params cfg 176-182.
  m.weight_init = 'cuda_convnet2'  # initW 0.03 in conv3-5: layers cfg 143, 172, 200; initB=1.

  config.optimizer = 'paper_sgd'  # inc = mom inc + eps grad - wc eps w: weights.cu 289-294.
  config.learning_rate = 0.02  # epsW=dexp[base=0.02;...]: params cfg line 2.
  config.momentum = 0.9  # momW=momB=0.9: params cfg lines 4-5.
  config.weight_decay = 5e-4  # wc=0.0005: params cfg line 6.
  # Biases: epsB base 0.04 = 2 x epsW's 0.02 (params cfg line 3), no decay (layer.cu line 743).
  config.param_rules = (('.*/bias', 2.0, 0.0),)
  config.lr_schedule = 'step'  # dexp: lr.cu lines 94-113, four equal parts of training.
  config.lr_step_epochs = (22.5, 45.0, 67.5)  # 1/4, 1/2, 3/4 of num_epochs (lr.cu 106-113).
  config.lr_step_factor = LR_STEP_FACTOR  # tgtFactor=250 over numSteps=4: params cfg line 2.
  config.num_epochs = 90  # A flag, not recorded: the paper's (docs/paper.md, Training (§5)).
  config.batch_size = 128  # --mini default 128: convnet.py line 253.

  inp = config.input
  inp.image_size = 227  # --inner-size is a flag (convnet.py line 259); see the docstring.
  inp.resize = 'center_square'  # CROP_TO_SQUARE = True: make-data/make-data.py lines 32-40.
  inp.resize_size = 256  # OUTPUT_IMAGE_SIZE: make-data/make-data.py line 41.
  inp.channel_order = 'rgb'  # out_color_space = JCS_RGB: cudaconvnet/src/jpeg.cpp line 76.
  inp.pixel_range = 255.0  # Raw bytes: jpeg.cpp line 131.
  inp.mean_subtraction = 'per_pixel'  # data_mean: convdata.py lines 80, 104, 192.
  inp.std = None  # Only the mean: convdata.py line 192.
  inp.augmentation = 'paper'  # Random crop and mirror: jpeg.cpp lines 58, 118-121.
  inp.pca_lighting = False  # --color-noise defaults to 0.0: convnet.py line 263.
  inp.eval_crops = 'center'  # --multiview-test defaults to 0: convnet.py line 258.
  return config
