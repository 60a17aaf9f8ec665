"""Trains and evaluates AlexNet: `python run.py --config=configs/default.py --workdir=DIR`.

Kept short on purpose: flags, multi-host set-up, then alexnet_jax.train.train_and_evaluate.
Override any config field from the command line, e.g. `--config.batch_size=64`.
"""

import logging as pylogging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Silence TensorFlow's start-up banner.

# First, so its malloc settings cover TensorFlow's and XLA's threads (alexnet_jax/allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import
from absl import app, flags, logging  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_SUMMARY = flags.DEFINE_bool('summary', False, 'Print the per-layer parameter table and exit.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'Multi-host: host:port of process 0 (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
flags.mark_flags_as_required(['config'])


class _ProjectInfoOnly(pylogging.Filter):
  """Keeps INFO lines from this project; libraries (Orbax, TFDS) speak only at WARNING and up."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    own = 'alexnet_jax' in record.pathname or record.pathname == __file__
    if not own and record.exc_info:
      # E.g. Orbax logs each failed write with a traceback; the project's own line says what
      # happened and what to do, the library's first line is kept as detail.
      record.exc_info, record.exc_text = None, None
    return own or record.levelno >= pylogging.WARNING


def _initialize_distributed(jax) -> None:
  """Joins the multi-host job given by the flags, or one JAX detects (SLURM, Open MPI, TPU, K8s)."""
  if _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value is not None:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    return
  try:
    jax.distributed.initialize()
  except ValueError as e:
    if 'coordinator_address' not in str(e):
      raise
    # No cluster detected (JAX then finds no coordinator address): a single-process run.


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a one-line error for an override of a field the config lacks."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
  except (AttributeError, KeyError) as e:
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(message)).
      e = e.args[0]
    # ml_collections' message: "'key'" and maybe "\nDid you mean "other" instead of "key"?".
    key, _, did_you_mean = str(e.args[0] if e.args else e).partition('\n')
    key = key.strip('\'"')
    flag = next((arg.split('=')[0] for arg in argv
                 if arg.startswith('--config.') and arg.split('=')[0].endswith(f'.{key}')),
                f'--config.{key}')
    print(f'error: {flag} names a field the config does not have. '
          f'{did_you_mean or "Check its spelling against the config file"} (run with --helpfull '
          'to list the fields).', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_ProjectInfoOnly())
  # TensorFlow only feeds data: keep it off any accelerator JAX needs.
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  import jax
  from alexnet_jax import preemption, summary, train
  from alexnet_jax.errors import UserError, exit_on_user_error

  with exit_on_user_error():
    config = _CONFIG.value
    if not isinstance(config, ml_collections.ConfigDict):  # config_flags defers load errors.
      filename = config_flags.get_config_filename(flags.FLAGS['config'])
      raise UserError(f'cannot load --config={filename} (no such file, or it failed to import); '
                      'pass a config file such as configs/default.py.')
    if _SUMMARY.value:
      print(summary.parameter_table(config))
      return
    if not _WORKDIR.value:
      raise UserError('--workdir is required: the directory for checkpoints and metrics.')
    _initialize_distributed(jax)
    if jax.process_index() != 0:  # Process 0 logs for everyone; the others only warn.
      logging.set_verbosity(logging.WARNING)
    logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
                 jax.devices())
    with preemption.STOP:  # SIGTERM/SIGINT: finish the step, save, exit 0.
      train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
