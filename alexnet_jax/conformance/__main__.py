"""python -m alexnet_jax.conformance --config=CONFIG [--reference=SOURCE] [--checkpoint=DIR]

Prints the report. Exit status 0 when no row differs, 1 when one does, 2 on a usage error or a
UserError.
"""

import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from alexnet_jax import recipes
from alexnet_jax.conformance.table import run
from alexnet_jax.errors import exit_on_user_error


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/imagenet.py')
  with exit_on_user_error():
    status = run(config, flags.FLAGS.checkpoint, title=' '.join(sys.argv[1:]),
                 reference=flags.FLAGS.reference)
  sys.exit(status)


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/imagenet.py.',
                                  lock_config=True)
  flags.DEFINE_enum('reference', 'paper', list(recipes.RECIPES),
                    'The source to compare with; its values and citations are in '
                    'alexnet_jax/recipes.py.')
  flags.DEFINE_string('checkpoint', None, 'Report on the params of this Orbax checkpoint (a '
                      'workdir, its checkpoints/ directory, or one step directory).')
  app.run(main)
