"""The paper as written: ILSVRC-2012 through TFDS `imagenet2012`, two-tower AlexNet, 227x227.

    python run.py --config=configs/imagenet.py --workdir=workdirs/imagenet \
        --config.manual_dir=/path/with/ILSVRC2012_tars

The paper reports 40.7% top-1 / 18.2% top-5 validation error for one net after ~90 epochs
(5-6 days on two GTX 580 GPUs); see docs/paper.md, Results (§6, §7). Place
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in `manual_dir`; TFDS prepares them once
into `data_dir`.

Every value follows docs/paper.md (the section is named at each block); alexnet_jax/recipes.py
lists them, and tests/recipes_test.py fails if one drifts. The other recipes (cuda_convnet2.py,
bvlc_alexnet.py, torchvision.py) start from this file and override what their source does
differently.
"""

import ml_collections

from alexnet_jax import registry


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = 'imagenet2012'  # TFDS builder name.
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir (None: default).
  config.manual_dir = ml_collections.config_dict.placeholder(str)  # Holds the ILSVRC2012 tars.
  # Every field of alexnet_jax.models.AlexNet, whose defaults are the paper (commented there):
  # conv/fc widths, towers, ReLU, LRN constants, overlapping pools, dropout 0.5, §5's init.
  config.model = registry.model_config('alexnet')
  config.kernels = 'auto'  # auto: per platform | cpu: ops.py + oneDNN | xla: plain lax ops.

  # The input convention (alexnet_jax/data/convention.py): docs/paper.md, "Data (§2)",
  # "Augmentation (§4.1)", "Input size: 224 or 227".
  config.input = ml_collections.ConfigDict()
  config.input.image_size = 227  # Side of the square the network sees (the paper's "224").
  config.input.resize = 'center_square'  # Shorter side to resize_size, the central square (§2).
  config.input.resize_size = 256  # §2.
  config.input.resize_antialias = True  # Bilinear with antialiasing (Pillow's).
  config.input.channel_order = 'rgb'  # §2: "raw RGB values".
  config.input.pixel_range = 255.0  # Pixels in [0, pixel_range] before the mean: raw (§2).
  config.input.mean_subtraction = 'per_pixel'  # The mean of each pixel (§2) | per_channel | none.
  # Per-channel mean values, or a per-pixel mean .npy, in channel_order on the pixel_range scale;
  # None: computed from the first mean_num_images training images (cached once).
  config.input.mean_values = ml_collections.config_dict.placeholder(tuple)
  config.input.mean_file = ml_collections.config_dict.placeholder(str)
  config.input.mean_num_images = 10000
  config.input.std = ml_collections.config_dict.placeholder(tuple)  # None: no division (§2).
  config.input.augmentation = 'paper'  # Random crops + mirrors (§4.1) | random_resized_crop
  # (random_resized_crop always subtracts the per-channel mean: its crops have no fixed pixels).
  config.input.pca_lighting = True  # "Fancy PCA" colour augmentation (§4.1).
  config.input.pca_lighting_stddev = 0.1  # Std of the alpha_i ~ N(0, 0.1) draws (§4.1).
  config.input.eval_crops = 'ten'  # center | ten: 4 corners + centre, each mirrored (§4.1).
  config.input.shuffle_buffer = 16384  # Training shuffle buffer (examples).
  config.input.deterministic = True  # Seeded, resumable data order.

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # Data-parallel axis size; -1: all devices left over.
  config.mesh.model = 1  # Model-parallel axis size: 1, or model.towers (one tower per device).
  config.mesh.strategy = 'towers'  # towers: paper §3.2 | hybrid: Krizhevsky 2014 | data (model=1).

  # docs/paper.md, "Training (§5)".
  config.optimizer = 'paper_sgd'  # paper_sgd: v <- m v - wd lr w - lr g | optax_sgd: optax.sgd.
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.weight_decay = 5e-4
  # (path regex, lr multiplier, weight-decay multiplier) per parameter, first match wins
  # (alexnet_jax/param_rules.py); () = every parameter alike, biases decayed: the paper.
  config.param_rules = ()
  config.batch_size = 128  # Global batch size (§5).
  config.lr_schedule = 'plateau'  # /10 when validation stalls (§5) | step | cosine | constant.
  config.lr_step_epochs = (30, 60, 80)  # For 'step': multiply by lr_step_factor at these epochs,
  config.lr_step_every_steps = 0  # or, if > 0, every this many steps (Caffe's `stepsize`).
  config.lr_step_factor = 0.1
  config.plateau_patience = 2  # For 'plateau': evaluations without improvement before /10.
  config.plateau_min_delta = 0.001  # Improvement in eval top-1 error that counts.
  config.plateau_max_reductions = 3  # The paper divided the learning rate three times.
  config.num_epochs = 90  # "Roughly 90 cycles" (§5).
  config.num_train_steps = -1  # -1: from num_epochs.
  config.grad_clip_norm = 0.0  # > 0: clip gradients to this global norm (the paper: off).
  # > 0: end training at the first logging interval whose running training top-1 error is at or
  # below this (Fig. 1 measures the epochs to 25%); 0: train for num_epochs.
  config.stop_at_train_error = 0.0
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
