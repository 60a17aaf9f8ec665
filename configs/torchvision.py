"""torchvision's `alexnet` with its reference training recipe and PyTorch's default init.

    python run.py --config=configs/torchvision.py --workdir=workdirs/torchvision \
        --config.manual_dir=/path/with/ILSVRC2012_tars
    python -m alexnet_jax.conformance --config=configs/torchvision.py --reference=torchvision
    python -m alexnet_jax.convert --torchvision=alexnet-owt-7be5be79.pth \
        --config=configs/torchvision.py --workdir=workdirs/tv

Files of pytorch/vision: torchvision/models/alexnet.py @ 00658a2 ("model") and
references/classification/train.py @ bde124e ("train"); docs/paper.md, "torchvision". One tower
of 64-192-384-256-256 kernels ("one weird trick"), conv1 padded by 2 on 224x224 inputs, no LRN,
dropout on the inputs of fc6 and fc7; the adaptive 6x6 average pool is an identity at 224x224.
Trained with PyTorch's SGD, weight decay 1e-4 on every parameter, x0.1 every 30 epochs;
random-resized crops; pixels / 255, then torchvision's mean and std. Its documentation reports
43.478% top-1 / 20.934% top-5 validation error for the published weights.
"""

import ml_collections

from configs import imagenet


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  m = config.model
  m.towers = 1  # One nn.Sequential, no groups: model lines 17-31.
  m.conv_features = (64, 192, 384, 256, 256)  # model lines 18, 21, 24, 26, 28.
  m.fc_features = (4096, 4096)  # model lines 35, 38.
  m.conv1_padding = 2  # model line 18.
  m.lrn = False  # No LocalResponseNorm: model lines 17-31.
  m.dropout_rate = 0.5  # nn.Dropout()'s default p: model lines 34, 37.
  m.dropout_placement = 'before'  # Dropout before fc6 and fc7: model lines 34-38.
  m.weight_init = 'pytorch'  # No init code: torch/nn/modules/{conv,linear}.py reset_parameters.

  config.optimizer = 'optax_sgd'  # torch.optim.SGD: train lines 181-182.
  # --lr 1e-2 for AlexNet: references/classification/README.md, "AlexNet and VGG" (PR #1998);
  # the script's default, 0.1, is for ResNets (train line 246).
  config.learning_rate = 0.01
  config.momentum = 0.9  # train line 247.
  config.weight_decay = 1e-4  # train lines 249-251.
  config.param_rules = ()  # model.parameters(), one group: biases decayed (train line 182).
  config.lr_schedule = 'step'  # StepLR: train line 189.
  config.lr_step_epochs = (30, 60)  # step_size=30: train line 252 (90 comes after the end).
  config.lr_step_factor = 0.1  # lr_gamma: train line 253.
  config.num_epochs = 90  # train line 242.
  config.batch_size = 256  # 32 per GPU (train line 241) on 8 GPUs (the README).

  inp = config.input
  inp.image_size = 224  # RandomResizedCrop(224), CenterCrop(224): train lines 101, 123.
  inp.resize = 'shorter_side'  # Resize(256): train line 122.
  inp.resize_size = 256  # train line 122.
  inp.resize_antialias = True  # PIL's BILINEAR resize antialiases.
  inp.channel_order = 'rgb'  # ImageFolder's PIL images: train lines 98, 119.
  inp.pixel_range = 1.0  # ToTensor: train lines 103, 124.
  inp.mean_subtraction = 'per_channel'  # Normalize: train lines 87-88.
  inp.mean_values = (0.485, 0.456, 0.406)  # train line 87.
  inp.std = (0.229, 0.224, 0.225)  # train line 88.
  inp.augmentation = 'random_resized_crop'  # + RandomHorizontalFlip: train lines 101-102.
  inp.pca_lighting = False  # train lines 100-105: no lighting noise.
  inp.eval_crops = 'center'  # CenterCrop: train line 123.
  return config
