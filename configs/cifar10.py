"""The paper's AlexNet on CIFAR-10 (32x32 colour images), trained on a 2-core CPU.

    python run.py --config=configs/cifar10.py --workdir=workdirs/cifar10

The README gives its measured accuracy and time. Kept from the paper: five convolutions in two
towers (conv2, conv4 and conv5 read only their own tower), conv1 11x11 stride 4, LRN with §3.3's
constants after conv1 and conv2, overlapping 3/2 max-pools, three fully connected layers with
dropout 0.5 on fc6 and fc7, ReLU, SGD with momentum 0.9 (the paper's update) and weight decay
5e-4, batch 128, the training set's per-pixel mean subtracted (§2), random crops, flips and PCA
lighting (§4.1). What changes, and why:

* Input 67x67: the 32x32 images are upscaled (bilinear, after augmentation) to the smallest side
  the paper's conv1 accepts (models.AlexNet.min_input_size()), so no layer changes. The maps are
  conv1 15x15 -> pool 7 -> conv2 7x7 -> pool 3 -> conv3-5 3x3 -> pool 1. Each pool reads a map of
  odd side, as the paper's 55, 27 and 13, so a non-overlapping 2/2 pool gives the same output
  sizes as the 3/2 one (the comparison of §3.4). Shrinking conv1 to fit 32x32 instead (5x5,
  stride 1) would change the first layer and cost 3.4x the multiply-adds at these widths.
* Half the convolution widths (48, 128, 192, 192, 128 kernels) and fc6/fc7 of 1024 units, as
  configs/default.py: ten classes and a 2-core CPU; the tower structure is unchanged.
* He (fan-in) initialization instead of N(0, 0.01): with §5's init the loss sat at chance
  (90% training error after 78 steps, a trial run) as docs/paper.md, Training (§5) warns.
* Pixels in [0, 1] and LRN's alpha times 255^2. LRN is not scale-free: b = a / (k + alpha *
  sum a^2)^beta. Under He init every layer keeps its input's scale, so with the paper's raw
  0-255 pixels the activations are ~60 and alpha = 1e-4 normalizes (alpha * sum a^2 ~ k at
  conv1), but the logits start at std ~55 and training diverged at step 7 (a trial run, lr
  0.01). With [0, 1] pixels and alpha = 1e-4 * 255^2 every activation is exactly 1/255 of the
  0-255 net's at the start (ReLU, pooling and this LRN are scale-equivariant; He biases are 0):
  the paper's normalization, with sane logits. (With [0, 1] pixels and alpha = 1e-4, LRN would be
  a constant factor 2^-0.75.)
* Crops: a random 32x32 window of the image padded with 4 zero (mean) pixels per side, i.e.
  shifts of up to 4 of 32 pixels; the paper's 224 (227) of 256 shift by up to 32 of 256, the
  same 12.5%. Test: the single centred view (the paper's ten views need crops smaller than the
  image).
* PCA lighting with CIFAR-10's own RGB eigenvectors and eigenvalues (alexnet_jax/data/cifar10.py)
  instead of ImageNet's, alpha ~ N(0, 0.1) as §4.1.
* Learning rate 0.01 as §5, but on a cosine schedule over a fixed number of epochs instead of
  dividing by 10 on validation plateaus: the run must end in a known time.
"""

import ml_collections

from configs import imagenet

INPUT_SIZE = 67  # AlexNet.min_input_size() with the paper's conv1 and pools.


def get_config() -> ml_collections.ConfigDict:
  config = imagenet.get_config()
  config.dataset = 'cifar10'
  config.model.num_classes = 10
  config.model.conv_features = (48, 128, 192, 192, 128)  # Half the paper's widths.
  config.model.fc_features = (1024, 1024)  # A quarter: 10 classes need far fewer.
  config.model.weight_init = 'he'  # §5's N(0, 0.01) stalls (docs/paper.md, Training (§5)).
  config.model.lrn_alpha = 1e-4 * 255.0 ** 2  # §3.3's 1e-4 for 0-255 pixels, on [0, 1] ones.

  config.input = ml_collections.ConfigDict()
  config.input.image_size = INPUT_SIZE  # Upscaled from 32x32, last.
  config.input.crop_padding = 4  # Random 32x32 crops of the image padded by 4: shifts of 12.5%.
  config.input.random_flip = True  # Horizontal mirrors (§4.1).
  config.input.pca_lighting = True  # §4.1, with CIFAR-10's own eigenvectors.
  config.input.pca_lighting_stddev = 0.1  # alpha_i ~ N(0, 0.1) (§4.1).
  config.input.mean_subtraction = 'per_pixel'  # §2: the training set's mean image.
  config.input.pixel_range = 1.0  # Pixels in [0, 1]; see lrn_alpha.
  config.input.train_examples = 0  # > 0: only the first N training images (e.g. to overfit).
  config.input.eval_on_train = False  # Also evaluate the training images (the train/test gap).

  config.learning_rate = 0.01  # §5.
  config.lr_schedule = 'cosine'
  config.num_epochs = 10
  config.eval_every_steps = 390  # One epoch (50,000 / 128 = 390 steps).
  config.checkpoint_every_steps = 390
  config.log_every_steps = 39
  config.eval_batch_size = 500
  return config
