"""The paper's ablations as data: each sweep is a set of named config overrides.

A variant is `name -> {'dotted.config.key': value}`; a value may also be a function of the base
config (the one-tower net halves the base's own conv widths). Variants with the same name are the
same run: every ablation compares against the paper's choice, 'paper', which is trained once and
shared. `experiments/sweep.py` runs the variants and writes the tables and figures.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

Overrides = Mapping[str, Any]  # 'model.activation' -> 'tanh', or a function of the base config.


@dataclasses.dataclass(frozen=True)
class Ablation:
  """One figure and one table section: the paper's choice against its alternatives."""
  name: str
  title: str
  variants: Mapping[str, Overrides]  # The first is the reference the deltas are taken against.
  paper_result: str  # What the paper reports for this comparison, quoted in the table.
  datasets: tuple[str, ...] | None = None  # None: every data set; else only these.
  not_applicable: str = ''  # Why it does not run on the other data sets (printed, tabled).

  def applies_to(self, dataset: str) -> bool:
    return self.datasets is None or dataset in self.datasets


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  ablations: tuple[Ablation, ...]
  # Per-dataset overrides that set the training length so the whole sweep fits its budget;
  # applied before the command line's --base_config.* overrides (which win).
  budgets: Mapping[str, Overrides]
  # Training top-1 errors whose first crossing the tables report (steps, epochs and time).
  target_train_errors: Mapping[str, tuple[float, ...]]
  default_seeds: int
  report: str = 'ablations'  # ablations | fig1 (picks each activation's fastest learning rate).


# --quick: a tiny net and a few steps, so CI exercises the whole runner in about a minute.
QUICK_BUDGET: Overrides = {
    'model.conv_features': (8, 16, 24, 24, 16),
    'model.fc_features': (32, 32),
    'input.image_size': 67,
    'batch_size': 16,
    'eval_batch_size': 16,
    'num_train_steps': 4,
    'log_every_steps': 1,
    'eval_every_steps': 2,
    'checkpoint_every_steps': 4,
    'num_eval_steps': 2,
}


def one_tower_conv_features(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """§3.2's one-GPU net: half the kernels in conv1-4; conv5 (and the FC layers) keep the two-tower
  widths, so that both nets have about the same number of parameters."""
  *first_four, conv5 = config.model.conv_features
  return tuple(width // 2 for width in first_four) + (conv5,)


PAPER = 'paper'  # The shared reference run: the base config unchanged.

ABLATIONS = Sweep(
    name='ablations',
    ablations=(
        Ablation('activation', 'ReLU vs tanh (§3.1)',
                 {PAPER: {}, 'tanh': {'model.activation': 'tanh'}},
                 'ReLU reaches 25% training error ~6x faster (Fig. 1, small CIFAR-10 net)'),
        Ablation('lrn', 'Local response normalization on vs off (§3.3)',
                 {PAPER: {}, 'no_lrn': {'model.lrn': False}},
                 'LRN lowers error by 1.4% top-1, 1.2% top-5'),
        Ablation('dropout', 'Dropout 0.5 vs none (§4.2)',
                 {PAPER: {}, 'no_dropout': {'model.dropout_rate': 0.0}},
                 'without dropout the net overfits substantially'),
        Ablation('pooling', 'Overlapping 3/2 vs non-overlapping 2/2 max-pooling (§3.4)',
                 {PAPER: {}, 'non_overlapping_pool': {'model.pooling': 'non_overlapping'}},
                 'overlapping pools lower error by 0.4% top-1, 0.3% top-5'),
        Ablation('towers', 'Two towers vs one tower of half the conv kernels (§3.2)',
                 {PAPER: {}, 'one_tower': {'model.towers': 1,
                                           'model.conv_features': one_tower_conv_features}},
                 'two towers lower error by 1.7% top-1, 1.2% top-5'),
        Ablation('pca_lighting', 'PCA lighting augmentation on vs off (§4.1)',
                 {PAPER: {}, 'no_pca_lighting': {'input.pca_lighting': False}},
                 'PCA lighting lowers top-1 error by over 1%',
                 datasets=('imagenet2012',),
                 not_applicable='PCA lighting perturbs RGB colour along ImageNet\'s principal '
                                'components; the Fashion-MNIST pipeline is greyscale and has no '
                                'such switch.'),
    ),
    budgets={
        # 2 seeds x 6 runs, ~1.5 hours on a quiet 2-core CPU (with fig1: ~2 hours); how this
        # was estimated is in experiments/README.md.
        'fashion_mnist': {'num_epochs': 2, 'num_train_steps': -1, 'log_every_steps': 25,
                          'eval_every_steps': 234, 'checkpoint_every_steps': 234},
        'imagenet2012': {},  # The paper's own schedule (90 epochs): for users with GPUs.
    },
    target_train_errors={'fashion_mnist': (0.25, 0.15), 'imagenet2012': (0.75, 0.5)},
    default_seeds=2,
)

# Fig. 1: the small net, no regularization, a learning rate grid per activation (the paper tuned
# each activation's learning rate separately); the report compares the fastest of each.
# With momentum 0.9, 0.1 sent the ReLU net to chance within 180 steps (a short trial run).
FIG1_LEARNING_RATES = (0.003, 0.01, 0.03)
_NO_REGULARIZATION = {'model.name': 'small_cnn', 'weight_decay': 0.0, 'input.random_flip': False,
                      'lr_schedule': 'constant', 'input.image_size': 32}
FIG1 = Sweep(
    name='fig1',
    ablations=(
        Ablation('fig1', 'Fig. 1: four-layer CNN, ReLU vs tanh',
                 {f'{activation}_lr{lr:g}': {**_NO_REGULARIZATION, 'model.activation': activation,
                                             'learning_rate': lr}
                  for activation in ('relu', 'tanh') for lr in FIG1_LEARNING_RATES},
                 'ReLU reaches 25% training error ~6x faster than tanh (CIFAR-10)'),
    ),
    budgets={
        # 2 seeds x 6 runs of one epoch: ~20 minutes on a quiet 2-core CPU.
        'fashion_mnist': {'num_epochs': 1, 'num_train_steps': -1, 'log_every_steps': 10,
                          'eval_every_steps': 234, 'checkpoint_every_steps': 468},
        'imagenet2012': {'num_epochs': 1, 'num_train_steps': -1},
    },
    target_train_errors={'fashion_mnist': (0.25, 0.15), 'imagenet2012': (0.9, 0.75)},
    default_seeds=2,
    report='fig1',
)

SWEEPS: dict[str, Sweep] = {sweep.name: sweep for sweep in (ABLATIONS, FIG1)}


def resolve(overrides: Overrides, base: ml_collections.ConfigDict) -> dict[str, Any]:
  """Overrides with every function of the base config replaced by its value."""
  return {key: value(base) if callable(value) else value for key, value in overrides.items()}


def unique_variants(sweep: Sweep, dataset: str) -> dict[str, Overrides]:
  """Every run of the sweep on `dataset`, each once; a name must mean one set of overrides."""
  runs: dict[str, Overrides] = {}
  for ablation in sweep.ablations:
    if not ablation.applies_to(dataset):
      continue
    for name, overrides in ablation.variants.items():
      if name in runs and runs[name] != overrides:
        raise ValueError(f'variant {name!r} has two different definitions in sweep {sweep.name!r}')
      runs[name] = overrides
  return runs

