"""Caffe's `models/bvlc_alexnet`: its train_val.prototxt and solver.prototxt, value for value.

    python run.py --config=configs/bvlc_alexnet.py --workdir=workdirs/bvlc_alexnet \
        --config.manual_dir=/path/with/ILSVRC2012_tars
    python -m alexnet_jax.convert --caffe=bvlc_alexnet.npz --caffe_mean=ilsvrc_2012_mean.npy \
        --config=configs/bvlc_alexnet.py --workdir=workdirs/bvlc_alexnet

Files of BVLC/caffe @ 9b89154; "train_val" and "solver" are models/bvlc_alexnet/*.prototxt
(docs/paper.md, "Caffe bvlc_alexnet"). Groups 2 in conv2, conv4 and conv5 are the two towers.
Differences from the paper: LRN across both groups with alpha divided by the window and k=1,
biases initialised to 0.1 and fc6/fc7 weights to std 0.005, biases at twice the learning rate
without weight decay, a step schedule in iterations at batch 256, BGR input warped to 256x256
(OpenCV, no antialiasing) minus the per-pixel mean, no PCA lighting, a centre-crop test. Its
readme reports 42.9% top-1 / 19.8% top-5 validation error (centre crop, iteration 360,000).
"""

import ml_collections

from configs import imagenet


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  m = config.model  # Widths, groups, pools, dropout as the paper: train_val lines 40-365.
  m.lrn_scope = 'across_towers'  # norm1 reads the whole conv1 blob: train_val lines 73-83.
  m.lrn_n = 5  # local_size: 5: train_val lines 79, 135.
  m.lrn_alpha = 1e-4  # alpha: 0.0001: train_val lines 80, 136,
  m.lrn_alpha_divided_by_n = True  # divided by local_size: src/caffe/layers/lrn_layer.cpp 120.
  m.lrn_beta = 0.75  # beta: 0.75: train_val lines 81, 137.
  m.lrn_k = 1.0  # k unset, default 1: src/caffe/proto/caffe.proto line 888.
  m.weight_init = 'caffe'  # std 0.01, fc6/fc7 0.005 (lines 280, 320); bias 0.1 (lines 119, ...).

  config.optimizer = 'paper_sgd'  # src/caffe/solvers/sgd_solver.cpp lines 228-234.
  config.learning_rate = 0.01  # base_lr: solver line 4.
  config.momentum = 0.9  # solver line 10.
  config.weight_decay = 5e-4  # solver line 11.
  # Biases lr_mult: 2, decay_mult: 0; weights 1 and 1: train_val lines 45-52 (every layer).
  config.param_rules = (('.*/bias', 2.0, 0.0),)
  config.lr_schedule = 'step'  # lr_policy: "step": solver line 5; sgd_solver.cpp lines 32-37.
  config.lr_step_every_steps = 100_000  # stepsize: solver line 7.
  config.lr_step_factor = 0.1  # gamma: solver line 6.
  config.num_train_steps = 450_000  # max_iter: solver line 9 (about 90 epochs).
  config.batch_size = 256  # train_val line 17.
  config.eval_batch_size = 50  # train_val line 36.

  inp = config.input
  inp.image_size = 227  # crop_size: train_val lines 12, 31.
  inp.resize = 'warp'  # 256x256, aspect not kept: examples/imagenet/readme.md lines 33-39.
  inp.resize_size = 256  # examples/imagenet/create_imagenet.sh lines 17-18.
  inp.resize_antialias = False  # cv::resize, INTER_LINEAR: src/caffe/util/io.cpp line 84.
  inp.channel_order = 'bgr'  # cv::imread: src/caffe/util/io.cpp lines 76-78.
  inp.pixel_range = 255.0  # uint8 values, scale 1: caffe.proto line 432.
  inp.mean_subtraction = 'per_pixel'  # mean_file: train_val lines 13, 32 (computed here from the
  #                                     training set, as tools/compute_image_mean does).
  inp.std = None  # data_transformer.cpp lines 113-115: only the mean.
  inp.augmentation = 'paper'  # Random crop, mirror: train_val line 11, data_transformer.cpp 87-89.
  inp.pca_lighting = False  # "not training with the relighting": models/bvlc_alexnet/readme.md 13.
  inp.eval_crops = 'center'  # data_transformer.cpp lines 90-92; readme.md line 18.
  return config
