"""The paper's full setting: ILSVRC-2012 through TFDS `imagenet2012`, two-tower AlexNet, 227x227.

    python run.py --config=configs/imagenet.py --workdir=workdirs/imagenet \
        --config.manual_dir=/path/with/ILSVRC2012_tars

The paper reports 40.7% top-1 / 18.2% top-5 validation error for one net after ~90 epochs
(5-6 days on two GTX 580 GPUs); see PAPER.md. Place `ILSVRC2012_img_train.tar` and
`ILSVRC2012_img_val.tar` in `manual_dir`; TFDS prepares them once into `data_dir`.
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = 'alexnet'
  model.num_classes = 1000  # Overridden by the data set's class count when they differ.
  model.conv_features = (96, 256, 384, 384, 256)  # Totals over the towers (§3.5).
  model.fc_features = (4096, 4096)  # fc6, fc7 totals over the towers.
  model.towers = 2  # 2: the paper's two-GPU layout; 1: a single tower of conv_features.
  model.activation = 'relu'  # relu | tanh (§3.1, Fig. 1).
  model.lrn = True  # Local response normalization after conv1 and conv2 (§3.3).
  model.lrn_scope = 'per_tower'  # per_tower (cuda-convnet2, faithful) | across_towers (Caffe).
  model.lrn_k = 2.0  # LRN constants (§3.3): k, window n, alpha, beta.
  model.lrn_n = 5
  model.lrn_alpha = 1e-4
  model.lrn_beta = 0.75
  model.lrn_alpha_divided_by_n = False  # The paper: no. PyTorch and Caffe: yes.
  model.conv1_padding = 0  # torchvision's variant: 2 (with 224x224 inputs).
  model.pooling = 'overlapping'  # overlapping (3/2, §3.4) | non_overlapping (2/2).
  model.dropout_rate = 0.5  # On the outputs of fc6 and fc7 (§4.2).
  model.dropout_placement = 'after'  # after: outputs of fc6/fc7 (paper) | before: inputs (torchvision).
  model.init = 'paper'  # paper: N(0, 0.01), biases 1 in conv2/4/5, fc6/7 | he: fan-in scaled.
  model.dtype = 'float32'  # Computation dtype (float32 | bfloat16); parameters stay float32.
  model.fast_ops = True  # Hand-written LRN/pool/conv gradients (alexnet_jax/ops.py); same maths.
  return model


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = 'imagenet2012'  # TFDS builder name.
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir (None: default).
  config.manual_dir = ml_collections.config_dict.placeholder(str)  # Holds the ILSVRC2012 tars.
  config.model = get_model_config()

  config.input = ml_collections.ConfigDict()
  config.input.image_size = 227  # Side of the square the network sees (the paper's "224").
  config.input.resize_size = 256  # Shorter side rescaled to this, then the central square (§2).
  config.input.mean_subtraction = 'per_pixel'  # per_pixel (§2) | per_channel.
  config.input.mean_num_images = 10000  # Training images averaged for the mean (cached once).
  config.input.pixel_range = 255.0  # Pixels in [0, pixel_range] before the mean (Caffe: 255).
  config.input.augmentation = 'paper'  # paper: random crop + flip | random_resized_crop
  # (random_resized_crop always subtracts the per-channel mean: its crops have no fixed pixels).
  config.input.pca_lighting = True  # "Fancy PCA" colour augmentation (§4.1).
  config.input.pca_lighting_stddev = 0.1  # Std of the alpha_i ~ N(0, 0.1) draws.
  config.input.eval_crops = 'ten'  # center | ten (4 corners + centre, each with its flip).
  config.input.shuffle_buffer = 16384  # Training shuffle buffer (examples).
  config.input.deterministic = True  # Seeded, resumable data order.

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # Data-parallel axis size; -1: all devices left over.
  config.mesh.model = 1  # Model-parallel axis size: 1, or model.towers (one tower per device).
  config.mesh.strategy = 'towers'  # towers: paper §3.2 | hybrid: Krizhevsky 2014 | data (model=1).

  config.optimizer = 'paper_sgd'  # paper_sgd: v <- m v - wd lr w - lr g | optax_sgd: optax.sgd.
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.batch_size = 128  # Global batch size.
  config.lr_schedule = 'plateau'  # plateau (§5) | step | cosine | constant.
  config.lr_step_epochs = (30, 60, 80)  # For 'step': divide by 10 at these epochs.
  config.plateau_patience = 2  # For 'plateau': evaluations without improvement before /10.
  config.plateau_min_delta = 0.001  # Improvement in eval top-1 error that counts.
  config.plateau_max_reductions = 3  # The paper divided the learning rate three times.
  config.num_epochs = 90
  config.num_train_steps = -1  # -1: from num_epochs.
  config.grad_clip_norm = 0.0  # > 0: clip gradients to this global norm (the paper: off).
  config.nan_policy = 'stop'  # Non-finite loss/gradients: stop | skip (the step is not applied).
  config.eval_batch_size = 128
  config.num_eval_steps = -1  # -1: the whole validation split.

  config.log_every_steps = 100
  config.eval_every_steps = 10000
  config.checkpoint_every_steps = 5000
  config.max_checkpoints_to_keep = 3
  # Resuming a workdir under a config whose model differs from the one that wrote the checkpoint
  # is an error unless this is True; then parameters that still fit are kept (docs/reliability.md).
  config.resume_with_changed_model = False
  config.seed = 0
  return config
