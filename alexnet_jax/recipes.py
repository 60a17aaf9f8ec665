"""What each reference implementation of AlexNet sets, value by value, with the file and line it
comes from: the one machine-readable table the recipe configs are tested against
(tests/recipes_test.py) and the conformance report compares a config with (`--reference`).

RECIPES[name] for name in 'paper' | 'cuda_convnet2' | 'caffe' | 'torchvision' is a `Recipe`:
its config file (configs/...), the source snapshot, and `facts`: one `Fact` per setting, giving
the config key that expresses it and the value that key must have to follow the source. A fact
the config cannot express has key None and reproduced=False; its note says what differs.

Line numbers refer to the snapshots in docs/paper.md's table: akrizhevsky/cuda-convnet2 @ 3238bf0,
BVLC/caffe @ 9b89154, pytorch/vision (torchvision/models/alexnet.py @ 00658a2,
references/classification/train.py @ bde124e). "layers cfg" is cuda-convnet2's
layers/layers-imagenet-2gpu-model.cfg, "params cfg" its layers/layer-params-imagenet-2gpu-model.cfg,
"train_val" and "solver" Caffe's models/bvlc_alexnet/{train_val,solver}.prototxt. The paper has no
line numbers: its facts cite the section of docs/paper.md that quotes it.
"""

import dataclasses
from typing import Any

NOT_IN_CONFIG = None  # Fact.key of a setting no config key expresses.


@dataclasses.dataclass(frozen=True)
class Fact:
  key: str | None  # Dotted config key ('model.lrn_alpha', 'input.channel_order', 'optimizer').
  value: Any  # What that key must be to follow the source (tuples for sequences).
  source: str  # File and line(s), or the docs/paper.md section quoting the paper.
  note: str = ''  # How the source writes it, where that differs from the config's form.
  reproduced: bool = True  # False: the config cannot express it (see note).


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  title: str
  config: str  # The config file that reproduces it, e.g. 'configs/bvlc_alexnet.py'.
  snapshot: str  # Repository @ commit the line numbers refer to.
  facts: tuple[Fact, ...]

  def fact(self, key: str) -> Fact:
    return next(f for f in self.facts if f.key == key)

  @property
  def checked(self) -> tuple[Fact, ...]:
    """The facts a config key expresses."""
    return tuple(f for f in self.facts if f.key is not None)


_P = 'docs/paper.md, '  # The paper's facts cite the page that quotes it.

PAPER = Recipe('paper', 'Krizhevsky, Sutskever & Hinton (NIPS 2012), as written',
               'configs/imagenet.py', 'the paper (docs/paper.md)', (
    Fact('model.towers', 2, _P + 'Two GPUs (§3.2)'),
    Fact('model.conv_features', (96, 256, 384, 384, 256), _P + 'Architecture (§3.5, Fig. 2)'),
    Fact('model.fc_features', (4096, 4096), _P + 'Architecture (§3.5, Fig. 2)'),
    Fact('model.activation', 'relu', _P + 'ReLU (§3.1)'),
    Fact('model.lrn', True, _P + 'LRN (§3.3)'),
    Fact('model.lrn_k', 2.0, _P + 'LRN (§3.3)'),
    Fact('model.lrn_n', 5, _P + 'LRN (§3.3)'),
    Fact('model.lrn_alpha', 1e-4, _P + 'LRN (§3.3)', 'alpha multiplies the plain sum of squares'),
    Fact('model.lrn_alpha_divided_by_n', False, _P + 'LRN (§3.3)'),
    Fact('model.lrn_beta', 0.75, _P + 'LRN (§3.3)'),
    Fact('model.lrn_scope', 'per_tower', _P + 'LRN (§3.3)',
         'the paper does not say; per tower as Krizhevsky\'s code'),
    Fact('model.conv1_relu_after_pool', False, _P + 'Architecture (§3.5, Fig. 2)',
         'conv, ReLU, LRN, pool'),
    Fact('model.conv2_rnorm', False, _P + 'Architecture (§3.5, Fig. 2)'),
    Fact('model.conv1_padding', 0, _P + 'Input size: 224 or 227'),
    Fact('model.pooling', 'overlapping', _P + 'Overlapping pooling (§3.4)', 'z=3, s=2'),
    Fact('model.dropout_rate', 0.5, _P + 'Dropout (§4.2)'),
    Fact('model.dropout_placement', 'after', _P + 'Dropout (§4.2)', 'outputs of fc6 and fc7'),
    Fact('model.weight_init', 'paper', _P + 'Training (§5)',
         'N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7'),
    Fact('optimizer', 'paper_sgd', _P + 'Training (§5)', 'v <- 0.9 v - 0.0005 e w - e g'),
    Fact('learning_rate', 0.01, _P + 'Training (§5)'),
    Fact('momentum', 0.9, _P + 'Training (§5)'),
    Fact('weight_decay', 5e-4, _P + 'Training (§5)'),
    Fact('param_rules', (), _P + 'Training (§5)', 'every parameter alike: biases decayed'),
    Fact('batch_size', 128, _P + 'Training (§5)'),
    Fact('lr_schedule', 'plateau', _P + 'Training (§5)',
         'divided by 10 when the validation error stopped improving'),
    Fact('plateau_max_reductions', 3, _P + 'Training (§5)', 'lowered three times'),
    Fact('num_epochs', 90, _P + 'Training (§5)', 'roughly 90 cycles'),
    Fact('input.image_size', 227, _P + 'Input size: 224 or 227',
         'the text says 224; 227 gives Fig. 2\'s 55x55 conv1 maps'),
    Fact('input.resize', 'center_square', _P + 'Data (§2)',
         'shorter side to 256, then the central 256x256'),
    Fact('input.resize_size', 256, _P + 'Data (§2)'),
    Fact('input.channel_order', 'rgb', _P + 'Data (§2)', 'raw RGB values'),
    Fact('input.pixel_range', 255.0, _P + 'Data (§2)', 'raw values, 0-255'),
    Fact('input.mean_subtraction', 'per_pixel', _P + 'Data (§2)', 'the mean of each pixel'),
    Fact('input.mean_values', None, _P + 'Data (§2)', 'computed from the training set'),
    Fact('input.std', None, _P + 'Data (§2)', 'no other preprocessing'),
    Fact('input.augmentation', 'paper', _P + 'Augmentation (§4.1)', 'random crops + mirrors'),
    Fact('input.pca_lighting', True, _P + 'Augmentation (§4.1)'),
    Fact('input.pca_lighting_stddev', 0.1, _P + 'Augmentation (§4.1)'),
    Fact('input.eval_crops', 'ten', _P + 'Augmentation (§4.1)', '4 corners + centre, mirrored'),
))

_CC2_LAYERS = 'cuda-convnet2 layers cfg'
_CC2_PARAMS = 'cuda-convnet2 params cfg'
# dexp[base=0.02;tgtFactor=250;numSteps=4]: 0.02 * 250^(-i/3) in quarter i of training
# (cudaconvnet/src/lr.cu lines 94-113): a step schedule x250^(-1/3) at 1/4, 1/2, 3/4 of 90 epochs.
CUDA_CONVNET2_LR_FACTOR = 250.0 ** (-1 / 3)

CUDA_CONVNET2 = Recipe('cuda_convnet2', "Krizhevsky's cuda-convnet2, 2-GPU model file",
                       'configs/cuda_convnet2.py', 'akrizhevsky/cuda-convnet2 @ 3238bf0', (
    Fact('model.towers', 2, _CC2_LAYERS + ' lines 9-33', 'conv1a gpu=0, conv1b gpu=1'),
    Fact('model.conv_features', (96, 256, 384, 384, 256),
         _CC2_LAYERS + ' lines 13, 26, 68, 83, 138, 152, 166, 180, 195, 209', 'per tower: '
         '48, 128, 192, 192, 128'),
    Fact('model.fc_features', (4096, 4096), _CC2_LAYERS + ' lines 241, 250, 267, 276',
         'fc2048a/b, fc2048ba/bb: 2048 per tower'),
    Fact('model.activation', 'relu', _CC2_LAYERS + ' lines 54, 77, 146, 171, 227, 244',
         'neuron=relu'),
    Fact('model.lrn', True, _CC2_LAYERS + ' lines 35-45, 95-105', 'type=cmrnorm'),
    Fact('model.lrn_scope', 'per_tower', _CC2_LAYERS + ' lines 35-45, 95-105',
         'rnorm1a reads conv1a only (channels=48)'),
    Fact('model.lrn_n', 5, _CC2_LAYERS + ' lines 39, 99', 'size=5'),
    Fact('model.lrn_alpha', 1e-4, _CC2_PARAMS + ' line 157; layer.py line 1331',
         'scale=0.0001, divided by size by the parser: 2e-5 on the sum'),
    Fact('model.lrn_alpha_divided_by_n', True, 'cuda-convnet2 layer.py line 1331'),
    Fact('model.lrn_beta', 0.75, _CC2_PARAMS + ' line 158', 'pow=0.75'),
    Fact('model.lrn_k', 2.0, _CC2_PARAMS + ' line 159; layer.py line 1333', 'minDiv=2'),
    Fact('model.conv1_relu_after_pool', True, _CC2_LAYERS + ' lines 9-63',
         'conv1a has no neuron; pool1a has neuron=relu (line 54): LRN sees signed responses'),
    Fact('model.conv2_rnorm', True, _CC2_LAYERS + ' lines 107-117; ' + _CC2_PARAMS +
         ' lines 176-182', 'cnorm2: type=rnorm, size=5, scale=0.001 / 25, pow=0.75, minDiv 1'),
    Fact('model.conv1_padding', 0, _CC2_LAYERS + ' line 14'),
    Fact('model.pooling', 'overlapping', _CC2_LAYERS + ' lines 51-52', 'sizeX=3, stride=2'),
    Fact('model.dropout_rate', 0.5, _CC2_PARAMS + ' lines 140-154', 'keep=0.5'),
    Fact('model.dropout_placement', 'after', _CC2_LAYERS + ' lines 256-288'),
    Fact('model.weight_init', 'cuda_convnet2', _CC2_LAYERS + ' lines 17-294; layer.py 949-950',
         'initW 0.03 in conv3-5, 0.01 elsewhere; initB=1 in conv2, 4, 5, fc6, fc7'),
    Fact('optimizer', 'paper_sgd', 'cuda-convnet2 cudaconvnet/src/weights.cu lines 289-294',
         'inc = mom inc + eps grad - wc eps w; w += inc'),
    Fact('learning_rate', 0.02, _CC2_PARAMS + ' line 2', 'epsW=dexp[base=0.02;...]'),
    Fact('lr_schedule', 'step', _CC2_PARAMS + ' line 2; cudaconvnet/src/lr.cu lines 94-113',
         'dexp: 4 equal steps from 0.02 to 0.02/250'),
    Fact('lr_step_epochs', (22.5, 45.0, 67.5), 'cudaconvnet/src/lr.cu lines 106-113',
         'steps at 1/4, 1/2, 3/4 of training (of num_epochs=90)'),
    Fact('lr_step_factor', CUDA_CONVNET2_LR_FACTOR, _CC2_PARAMS + ' line 2',
         'tgtFactor=250 over numSteps=4: x250^(-1/3) per step'),
    Fact('momentum', 0.9, _CC2_PARAMS + ' lines 4-5', 'momW=momB=0.9'),
    Fact('weight_decay', 5e-4, _CC2_PARAMS + ' line 6', 'wc=0.0005'),
    Fact('param_rules', (('.*/bias', 2.0, 0.0),),
         _CC2_PARAMS + ' lines 2-3; cudaconvnet/src/layer.cu line 743',
         'epsB base 0.04 = 2 x epsW base 0.02; biases built with wc=0'),
    Fact(NOT_IN_CONFIG, 'epsB=dexp[base=0.04;tgtFactor=25;numSteps=2]', _CC2_PARAMS + ' line 3',
         'the biases\' own schedule (0.04, then 0.0016 at half-time) makes their rate 2, 12.6, '
         '3.2, 20 x the weights\' in the four quarters; the config keeps 2x throughout',
         reproduced=False),
    Fact('batch_size', 128, 'cuda-convnet2 convnet.py line 253', '--mini default 128'),
    Fact('num_epochs', 90, _P + 'Training (§5)', "a command-line flag, not recorded: the paper's"),
    Fact('input.image_size', 227, 'cuda-convnet2 convnet.py line 259; layer.py line 1097',
         '--inner-size is a flag, not recorded; the paper\'s 224 with the parser\'s rounded-up '
         'conv1 output (55) is a 227 input with 3 zero rows and columns'),
    Fact('input.resize', 'center_square', 'cuda-convnet2 make-data/make-data.py lines 32-41',
         'CROP_TO_SQUARE = True: shorter edge 256, then the centre 256x256'),
    Fact('input.resize_size', 256, 'cuda-convnet2 make-data/make-data.py line 41'),
    Fact('input.channel_order', 'rgb', 'cuda-convnet2 cudaconvnet/src/jpeg.cpp line 76',
         'out_color_space = JCS_RGB'),
    Fact('input.pixel_range', 255.0, 'cuda-convnet2 cudaconvnet/src/jpeg.cpp line 131'),
    Fact('input.mean_subtraction', 'per_pixel', 'cuda-convnet2 convdata.py lines 80, 104, 192',
         'data_mean of make-data/input_meta'),
    Fact(NOT_IN_CONFIG, 'data_mean cropped at the centre', 'cuda-convnet2 convdata.py line 104',
         'the centre crop of the mean image is subtracted from every crop; this project '
         'subtracts the mean at the crop\'s own pixels (as Caffe)', reproduced=False),
    Fact('input.std', None, 'cuda-convnet2 convdata.py line 192', 'only the mean'),
    Fact('input.augmentation', 'paper', 'cuda-convnet2 cudaconvnet/src/jpeg.cpp lines 58, '
         '118-121', 'random inner-size crop and random mirror'),
    Fact('input.pca_lighting', False, 'cuda-convnet2 convnet.py line 263',
         '--color-noise defaults to 0.0; the value Krizhevsky ran is not recorded'),
    Fact(NOT_IN_CONFIG, 'color noise: sqrt-eigenvalue PCA shift, then x 1/(1+c)',
         'cuda-convnet2 convdata.py lines 66-75, 158-183',
         'differs from the paper\'s formula (docs/paper.md); not implemented', reproduced=False),
    Fact('input.eval_crops', 'center', 'cuda-convnet2 convnet.py line 258; jpeg.cpp line 121',
         '--multiview-test defaults to 0: the centre crop'),
))

_CAFFE = 'Caffe models/bvlc_alexnet/train_val.prototxt'
_SOLVER = 'Caffe models/bvlc_alexnet/solver.prototxt'

CAFFE = Recipe('caffe', "Caffe's models/bvlc_alexnet", 'configs/bvlc_alexnet.py',
               'BVLC/caffe @ 9b89154', (
    Fact('model.towers', 2, _CAFFE + ' lines 112, 201, 235', 'group: 2 in conv2, conv4, conv5'),
    Fact('model.conv_features', (96, 256, 384, 384, 256), _CAFFE + ' lines 54, 109, 165, 198, 232'),
    Fact('model.fc_features', (4096, 4096), _CAFFE + ' lines 277, 317'),
    Fact('model.activation', 'relu', _CAFFE + ' lines 67-72 (relu1), 124-128, ...'),
    Fact('model.lrn', True, _CAFFE + ' lines 73-83, 129-139'),
    Fact('model.lrn_scope', 'across_towers', _CAFFE + ' lines 73-83',
         'norm1 reads the whole conv1 blob'),
    Fact('model.lrn_n', 5, _CAFFE + ' lines 79, 135', 'local_size: 5'),
    Fact('model.lrn_alpha', 1e-4, _CAFFE + ' lines 80, 136', 'alpha: 0.0001'),
    Fact('model.lrn_alpha_divided_by_n', True, 'Caffe src/caffe/layers/lrn_layer.cpp line 120'),
    Fact('model.lrn_beta', 0.75, _CAFFE + ' lines 81, 137'),
    Fact('model.lrn_k', 1.0, 'Caffe src/caffe/proto/caffe.proto line 888', 'k unset: default 1'),
    Fact('model.conv1_relu_after_pool', False, _CAFFE + ' lines 67-94', 'relu1, norm1, pool1'),
    Fact('model.conv2_rnorm', False, _CAFFE + ' lines 123-150', 'relu2, norm2, pool2'),
    Fact('model.conv1_padding', 0, _CAFFE + ' lines 53-56', 'no pad'),
    Fact('model.pooling', 'overlapping', _CAFFE + ' lines 89-93', 'kernel_size: 3, stride: 2'),
    Fact('model.dropout_rate', 0.5, _CAFFE + ' lines 300, 340', 'dropout_ratio: 0.5'),
    Fact('model.dropout_placement', 'after', _CAFFE + ' lines 294-302, 334-342',
         'drop6 on fc6 after relu6'),
    Fact('model.weight_init', 'caffe', _CAFFE + ' lines 57-64, ..., 356-365',
         'std 0.01, fc6/fc7 0.005; biases 0.1 where the paper has 1'),
    Fact('optimizer', 'paper_sgd', 'Caffe src/caffe/solvers/sgd_solver.cpp lines 228-234',
         'history = momentum history + local_rate (diff + decay w)'),
    Fact('learning_rate', 0.01, _SOLVER + ' line 4', 'base_lr: 0.01'),
    Fact('lr_schedule', 'step', _SOLVER + ' line 5; sgd_solver.cpp lines 32-37',
         'lr_policy: "step": base_lr gamma^floor(iter / stepsize)'),
    Fact('lr_step_every_steps', 100_000, _SOLVER + ' line 7', 'stepsize: 100000'),
    Fact('lr_step_factor', 0.1, _SOLVER + ' line 6', 'gamma: 0.1'),
    Fact('num_train_steps', 450_000, _SOLVER + ' line 9', 'max_iter: 450000 (about 90 epochs)'),
    Fact('momentum', 0.9, _SOLVER + ' line 10'),
    Fact('weight_decay', 5e-4, _SOLVER + ' line 11'),
    Fact('param_rules', (('.*/bias', 2.0, 0.0),), _CAFFE + ' lines 45-52 (every layer)',
         'weights lr_mult 1, decay_mult 1; biases lr_mult 2, decay_mult 0'),
    Fact('batch_size', 256, _CAFFE + ' line 17'),
    Fact('eval_batch_size', 50, _CAFFE + ' line 36'),
    Fact('input.image_size', 227, _CAFFE + ' lines 12, 31', 'crop_size: 227'),
    Fact('input.resize', 'warp', 'Caffe examples/imagenet/readme.md lines 33-39; '
         'create_imagenet.sh lines 13-18', 'resized to 256x256, aspect ratio not kept'),
    Fact('input.resize_size', 256, 'Caffe examples/imagenet/create_imagenet.sh lines 17-18'),
    Fact('input.resize_antialias', False, 'Caffe src/caffe/util/io.cpp line 84',
         'cv::resize, default INTER_LINEAR'),
    Fact('input.channel_order', 'bgr', 'Caffe src/caffe/util/io.cpp lines 76-78', 'cv::imread'),
    Fact('input.pixel_range', 255.0, 'Caffe src/caffe/proto/caffe.proto line 432; '
         'data_transformer.cpp lines 107-115', 'uint8 values, scale default 1'),
    Fact('input.mean_subtraction', 'per_pixel', _CAFFE + ' lines 13, 32; '
         'src/caffe/data_transformer.cpp lines 113-115', 'mean_file, at the crop\'s pixels'),
    Fact('input.std', None, 'Caffe src/caffe/data_transformer.cpp lines 113-115'),
    Fact('input.augmentation', 'paper', _CAFFE + ' lines 11-12; data_transformer.cpp lines '
         '51, 87-89', 'random 227 crops, random mirror'),
    Fact('input.pca_lighting', False, 'Caffe models/bvlc_alexnet/readme.md line 13'),
    Fact('input.eval_crops', 'center', 'Caffe src/caffe/data_transformer.cpp lines 90-92; '
         'models/bvlc_alexnet/readme.md line 18', 'the centre crop'),
))

_TV_MODEL = 'torchvision/models/alexnet.py @ 00658a2'
_TV_TRAIN = 'torchvision references/classification/train.py @ bde124e'

TORCHVISION = Recipe('torchvision', "torchvision's alexnet and its reference training recipe",
                     'configs/torchvision.py', 'pytorch/vision (see the module docstring)', (
    Fact('model.towers', 1, _TV_MODEL + ' lines 17-31', 'one nn.Sequential, no groups'),
    Fact('model.conv_features', (64, 192, 384, 256, 256), _TV_MODEL + ' lines 18, 21, 24, 26, 28'),
    Fact('model.fc_features', (4096, 4096), _TV_MODEL + ' lines 35, 38'),
    Fact('model.activation', 'relu', _TV_MODEL + ' lines 19, 22, 25, 27, 29, 36, 39'),
    Fact('model.lrn', False, _TV_MODEL + ' lines 17-31', 'no LocalResponseNorm'),
    Fact('model.conv1_relu_after_pool', False, _TV_MODEL + ' lines 18-20'),
    Fact('model.conv2_rnorm', False, _TV_MODEL + ' lines 21-23'),
    Fact('model.conv1_padding', 2, _TV_MODEL + ' line 18', 'padding=2'),
    Fact('model.pooling', 'overlapping', _TV_MODEL + ' lines 20, 23, 30',
         'MaxPool2d(kernel_size=3, stride=2)'),
    Fact('model.dropout_rate', 0.5, _TV_MODEL + ' lines 34, 37', 'nn.Dropout() default p=0.5'),
    Fact('model.dropout_placement', 'before', _TV_MODEL + ' lines 34-38',
         'Dropout before fc6 and before fc7'),
    Fact('model.weight_init', 'pytorch', 'torch/nn/modules/conv.py lines 182-205, '
         'linear.py lines 117-128 (torch 2.13)', 'no init code: PyTorch\'s layer defaults'),
    Fact('optimizer', 'optax_sgd', _TV_TRAIN + ' lines 181-182', 'torch.optim.SGD'),
    Fact('learning_rate', 0.01, 'torchvision references/classification/README.md, "AlexNet and '
         'VGG" (pytorch/vision PR #1998)', '--lr 1e-2 for AlexNet; the script default is 0.1 '
         '(line 246)'),
    Fact('momentum', 0.9, _TV_TRAIN + ' line 247'),
    Fact('weight_decay', 1e-4, _TV_TRAIN + ' lines 249-251'),
    Fact('param_rules', (), _TV_TRAIN + ' line 182', 'model.parameters(): biases decayed'),
    Fact('lr_schedule', 'step', _TV_TRAIN + ' line 189', 'StepLR'),
    Fact('lr_step_epochs', (30, 60), _TV_TRAIN + ' lines 189, 252',
         'step_size=30 epochs (the step at 90 comes after the last epoch)'),
    Fact('lr_step_factor', 0.1, _TV_TRAIN + ' line 253', 'lr_gamma 0.1'),
    Fact('num_epochs', 90, _TV_TRAIN + ' line 242'),
    Fact('batch_size', 256, _TV_TRAIN + ' line 241; references/classification/README.md',
         '32 per GPU on 8 GPUs'),
    Fact('input.image_size', 224, _TV_TRAIN + ' lines 101, 123'),
    Fact('input.resize', 'shorter_side', _TV_TRAIN + ' line 122; torchvision/transforms/'
         'functional.py _compute_resized_output_size', 'Resize(256): the longer side '
         'int(256 * long / short)'),
    Fact('input.resize_size', 256, _TV_TRAIN + ' line 122'),
    Fact('input.resize_antialias', True, 'torchvision/transforms/functional.py resize (PIL)',
         'PIL Image.resize with BILINEAR: antialiased'),
    Fact('input.channel_order', 'rgb', _TV_TRAIN + ' lines 98, 119', 'ImageFolder loads PIL RGB'),
    Fact('input.pixel_range', 1.0, _TV_TRAIN + ' lines 103, 124', 'ToTensor: /255'),
    Fact('input.mean_subtraction', 'per_channel', _TV_TRAIN + ' lines 87-88', 'Normalize'),
    Fact('input.mean_values', (0.485, 0.456, 0.406), _TV_TRAIN + ' line 87'),
    Fact('input.std', (0.229, 0.224, 0.225), _TV_TRAIN + ' line 88'),
    Fact('input.augmentation', 'random_resized_crop', _TV_TRAIN + ' lines 101-102',
         'RandomResizedCrop(224) + RandomHorizontalFlip'),
    Fact(NOT_IN_CONFIG, 'RandomResizedCrop sampling', _TV_TRAIN + ' line 101',
         'same scale (0.08, 1) and ratio (3/4, 4/3) ranges; TensorFlow\'s box sampler, not '
         'torchvision\'s (log-uniform ratio, centre-crop fallback)', reproduced=False),
    Fact('input.pca_lighting', False, _TV_TRAIN + ' lines 100-105', 'no lighting noise'),
    Fact('input.eval_crops', 'center', _TV_TRAIN + ' line 123', 'CenterCrop(224)'),
))

RECIPES: dict[str, Recipe] = {r.name: r for r in (PAPER, CUDA_CONVNET2, CAFFE, TORCHVISION)}


def config_value(config: Any, key: str) -> Any:
  """The value at dotted `key` of a ConfigDict (None when absent), sequences as tuples."""
  value = config
  for part in key.split('.'):
    value = value.get(part) if hasattr(value, 'get') else None
  return _tuples(value)


def _tuples(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, tuple) and isinstance(b, tuple):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return not isinstance(b, bool) and abs(a - b) <= 1e-9 * max(abs(a), abs(b))
  return a == b


def compare(recipe: Recipe, config: Any) -> list[tuple[Fact, Any, bool]]:
  """(fact, the config's value, whether it follows the source) for each fact a key expresses."""
  return [(fact, value, _same(value, fact.value))
          for fact in recipe.checked for value in [config_value(config, fact.key)]]
