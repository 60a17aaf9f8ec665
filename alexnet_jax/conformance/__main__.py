"""python -m alexnet_jax.conformance --config=CONFIG [--reference=SOURCE] [--checkpoint=DIR]

Prints the report. Exit status 0 when no row differs, 1 when one does, 2 on a usage error or a
UserError (one `error:` line, via alexnet_jax.cli).
"""

import sys
from collections.abc import Sequence

from absl import flags

from alexnet_jax import cli, recipes
from alexnet_jax.conformance.table import run


def main(argv: Sequence[str]) -> int:
  """0 when every row matches, 1 otherwise."""
  del argv
  config = cli.config_value(example='configs/imagenet.py')
  return run(config, flags.FLAGS.checkpoint, title=' '.join(sys.argv[1:]),
             reference=flags.FLAGS.reference)


def define_flags() -> None:
  cli.define_config_flag(None, 'Config file, e.g. configs/imagenet.py.')
  flags.DEFINE_enum('reference', 'paper', list(recipes.RECIPES),
                    'The source to compare with; its values and citations are in '
                    'alexnet_jax/recipes.py.')
  flags.DEFINE_string('checkpoint', None, 'Report on the params of this Orbax checkpoint (a '
                      'workdir, its checkpoints/ directory, or one step directory).')


if __name__ == '__main__':
  cli.run(main, define_flags)
