"""Trains and evaluates AlexNet: `python run.py --config=configs/default.py --workdir=DIR`.

Kept short on purpose: flags, multi-host set-up, then alexnet_jax.train.train_and_evaluate;
the command-line shell (log level, one-line errors) is alexnet_jax/cli.py.
Override any config field from the command line, e.g. `--config.batch_size=64`.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Silence TensorFlow's start-up banner.

# First, so its malloc settings cover TensorFlow's and XLA's threads (alexnet_jax/allocator.py).
import alexnet_jax  # noqa: E402,F401  pylint: disable=unused-import
from absl import flags, logging  # noqa: E402

from alexnet_jax import cli  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402

cli.define_config_flag(None, 'Training config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_SUMMARY = flags.DEFINE_bool('summary', False, 'Print the per-layer parameter table and exit.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'Multi-host: host:port of process 0 (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
flags.mark_flags_as_required(['config'])


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


def main(argv):
  del argv
  from alexnet_jax import config_checks, summary

  config = cli.config_value()
  if _SUMMARY.value:
    print(summary.parameter_table(config))
    return
  if not _WORKDIR.value:
    raise UserError('--workdir is required: the directory for checkpoints and metrics.')
  # A mistake is one line before JAX and TensorFlow load (data.create_dataset keeps TensorFlow
  # off the GPUs).
  config_checks.validate(config)
  import jax
  from alexnet_jax import preemption, train

  _initialize_distributed(jax)
  if jax.process_index() != 0:  # Process 0 logs for everyone; the others only warn.
    logging.set_verbosity(logging.WARNING)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  with preemption.STOP:  # SIGTERM/SIGINT: finish the step, save, exit 0.
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main, log_level='info')
