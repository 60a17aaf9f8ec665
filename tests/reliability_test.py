"""Reliability: signals, kill -9, corrupt checkpoints, failed saves, NaNs and invalid configs.

Runs that get interrupted are subprocesses (tests/train_driver.py: run.py on mocked data, each
batch slowed down so that a kill lands inside a chosen step; the SIGTERM is sent by the run itself
from inside its evaluation). They share a persistent compilation
cache, so only the first one compiles. The uninterrupted reference run is one of them; the other
tests copy its workdir (checkpoints at steps 6, 9, 12) instead of training from scratch.

metrics.jsonl after a crash holds the steps since the last checkpoint twice; runs are compared
with `metrics.read_metrics`, which keeps the newest row of each step (the run that went on).
"""

import dataclasses
import errno
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import checkpoint, data, metrics, optim, registry, train
from alexnet_jax.errors import UserError
from tests.conftest import tiny_config
from tests.train_test import tensorboard_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 12
EVAL_EVERY = 6
SECONDS_PER_BATCH = 0.3
DRIVER_FLAGS = (f'--config.num_train_steps={TOTAL_STEPS}', f'--config.eval_every_steps={EVAL_EVERY}')


def run_config(**overrides):
  """The config of the driver runs (tests/tiny_config.py plus DRIVER_FLAGS)."""
  return tiny_config(**{'num_train_steps': TOTAL_STEPS, 'eval_every_steps': EVAL_EVERY,
                        **overrides})


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('jax_compilation_cache'))


def start_driver(workdir, cache_dir, seconds_per_batch=0.0, extra_flags=()):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  command = [sys.executable, '-m', 'tests.train_driver', '--config=tests/tiny_config.py',
             f'--workdir={workdir}', f'--seconds_per_batch={seconds_per_batch}',
             *DRIVER_FLAGS, *extra_flags]
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=600):
  output = process.communicate(timeout=timeout)[0]
  return process.returncode, output


def wait_for_row(process, workdir, step, timeout=600):
  """Blocks until metrics.jsonl has a training row for `step` (written right after the step)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(path) and any(r['step'] == step and 'train/loss' in r
                                    for r in metrics.read_jsonl(path)):
      return
    if process.poll() is not None:
      pytest.fail(f'the run ended before step {step}:\n{process.communicate()[0][-3000:]}')
    time.sleep(0.02)
  pytest.fail(f'no row for step {step} within {timeout} s')


def merged_rows(workdir):
  return metrics.read_metrics(os.path.join(workdir, 'metrics.jsonl'))


def train_losses(workdir):
  return {step: row['train/loss'] for step, row in merged_rows(workdir).items()
          if 'train/loss' in row}


def eval_losses(workdir):
  return {step: row['eval/loss'] for step, row in merged_rows(workdir).items()
          if 'eval/loss' in row}


@pytest.fixture(scope='module')
def reference_workdir(tmp_path_factory, compilation_cache):
  """One uninterrupted run of TOTAL_STEPS steps."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  returncode, output = finish(start_driver(workdir, compilation_cache))
  assert returncode == 0, output[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['12', '6', '9']
  return workdir


def copy_of(workdir, tmp_path):
  """A copy of `workdir`'s checkpoints, without its metrics: rows then come from the new run."""
  destination = str(tmp_path / 'workdir')
  shutil.copytree(workdir, destination, ignore=shutil.ignore_patterns('metrics.jsonl'))
  return destination


# --- Signals and kill -9 --------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_and_sigkills_at_random_moments_resume_to_the_same_run(
    tmp_path, reference_workdir, compilation_cache):
  rng = np.random.default_rng(8)
  workdir = str(tmp_path)

  # SIGTERM while evaluating at step 6 (sent by the run itself as the evaluation reads its first
  # batch, so no timing window): the evaluation is abandoned, step 6 saved, exit 0.
  process = start_driver(workdir, compilation_cache,
                         extra_flags=('--sigterm_in_evaluation=1',))
  returncode, output = finish(process)
  assert returncode == 0, output[-3000:]
  stopped = re.search(r'Stopped by SIGTERM after step (\d+); the checkpoint is in (\S+)\. Run the '
                      'same command to resume.', output)
  assert stopped, output[-3000:]
  assert int(stopped[1]) == EVAL_EVERY
  assert stopped[2] == os.path.join(workdir, 'checkpoints', stopped[1])
  assert os.path.isdir(stopped[2])
  assert EVAL_EVERY not in eval_losses(workdir)  # Abandoned: nothing recorded.
  last_seen = int(stopped[1])

  # kill -9 twice, at random moments of later steps (inside a step, a save or an evaluation).
  outputs = []
  for _ in range(2):
    process = start_driver(workdir, compilation_cache, SECONDS_PER_BATCH)
    last_seen += int(rng.integers(1, 3))
    wait_for_row(process, workdir, last_seen)
    time.sleep(rng.uniform(0, 2 * SECONDS_PER_BATCH))
    process.kill()
    outputs.append(finish(process)[1])
  assert 'eval step 6:' in outputs[0]  # The evaluation the SIGTERM interrupted was redone first.

  returncode, output = finish(start_driver(workdir, compilation_cache))
  assert returncode == 0, output[-3000:]
  assert 'Resumed from checkpoint step' in output
  expected = train_losses(reference_workdir)
  assert sorted(expected) == list(range(1, TOTAL_STEPS + 1))
  assert train_losses(workdir) == expected  # Bit for bit, whatever the interruptions.
  assert eval_losses(workdir) == eval_losses(reference_workdir)
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*'))


# --- Corrupt checkpoints --------------------------------------------------------------------------


def largest_file(directory):
  files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


def flip_bits(path):
  """Flips one bit at 16 places: each lands in compressed or raw array data, or in an index."""
  content = bytearray(open(path, 'rb').read())
  for i in range(16):
    content[(2 * i + 1) * len(content) // 32] ^= 0x10
  open(path, 'wb').write(bytes(content))


def truncate(path):
  content = open(path, 'rb').read()
  open(path, 'wb').write(content[:len(content) // 2])


def garble_json(path):
  open(path, 'w', encoding='utf-8').write('{"not": json')


def replace_with_step_1(path):
  """Valid array files of another step: only the checksums can tell (Orbax restores them)."""
  shutil.rmtree(path)
  shutil.copytree(path.replace(os.sep + '2' + os.sep, os.sep + '1' + os.sep), path)


def small_state(value):
  """A TrainState-shaped tree; random values, so that the array data is stored uncompressed."""
  rng = np.random.default_rng(value)
  params = {'fc8': {'kernel': jnp.asarray(rng.normal(size=(2, 64, 32)), jnp.float32),
                    'bias': jnp.full((10,), value, jnp.float32)}}
  return train.TrainState(step=jnp.int32(value), params=params,
                          opt_state={'trace': jax.tree.map(lambda p: -p, params)})


def save_small_steps(workdir, steps):
  ckpt = checkpoint.Checkpointer(workdir)
  for step in steps:
    ckpt.save(step, small_state(step), {'step': step}, {'plateau': {}})
  ckpt.wait_until_finished()
  ckpt.close()


def test_a_half_written_step_is_never_restored_and_gets_removed(tmp_path):
  workdir = str(tmp_path)
  save_small_steps(workdir, [1])
  # What a save killed half way leaves: Orbax renames the directory only once it is complete.
  partial = os.path.join(workdir, 'checkpoints', '2.orbax-checkpoint-tmp')
  shutil.copytree(os.path.join(workdir, 'checkpoints', '1'), partial)
  os.remove(os.path.join(partial, 'state', 'manifest.ocdbt'))
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.latest_step() == 1
  step, state, _, _ = ckpt.restore_latest(jax.eval_shape(lambda: small_state(0)))
  assert step == 1
  # Removed in the background from the start on, certainly before the next save begins.
  ckpt.save(2, state, {'step': 2}, {'plateau': {}})
  ckpt.wait_until_finished()
  assert sorted(os.listdir(ckpt.directory)) == ['1', '2']
  ckpt.close()


@pytest.mark.parametrize('damage, relative_path, reason', [
    (replace_with_step_1, 'state', r'ValueError: \S+ does not match its saved checksum\)'),
    # Most flipped bits in array data pass Orbax's checks; those in its indexes do not.
    (flip_bits, 'state/ocdbt.process_0', ''),
    (truncate, 'state/ocdbt.process_0', ''),
    (truncate, 'state/_METADATA', ''),
    (garble_json, 'trainer/metadata', ''),
])
def test_an_unreadable_latest_checkpoint_is_reported_and_the_previous_one_used(
    tmp_path, caplog, damage, relative_path, reason):
  workdir = str(tmp_path)
  save_small_steps(workdir, [1, 2])
  target = os.path.join(workdir, 'checkpoints', '2', relative_path)
  damage(largest_file(target) if target.endswith('ocdbt.process_0') else target)

  ckpt = checkpoint.Checkpointer(workdir)
  with caplog.at_level(logging.WARNING):
    step, state, input_position, _ = ckpt.restore_latest(jax.eval_shape(lambda: small_state(0)))
  assert step == 1 and input_position == {'step': 1}
  jax.tree.map(np.testing.assert_array_equal, state, small_state(1))
  reports = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  assert re.match(rf'Checkpoint step 2 in {ckpt.directory} is unreadable \({reason}', reports[0])
  assert '\n' not in reports[0]
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_unreadable', '2'))
  assert ckpt.latest_step() == 1
  ckpt.save(2, small_state(2), {'step': 2}, {'plateau': {}})  # Training can write step 2 again.
  ckpt.wait_until_finished()
  ckpt.close()


def test_no_readable_checkpoint_is_a_user_error(tmp_path):
  workdir = str(tmp_path)
  save_small_steps(workdir, [1])
  truncate(largest_file(os.path.join(workdir, 'checkpoints', '1', 'state', 'ocdbt.process_0')))
  ckpt = checkpoint.Checkpointer(workdir)
  with pytest.raises(UserError, match=r'no checkpoint in .* is readable \(steps 1\); move that'):
    ckpt.restore_latest(jax.eval_shape(lambda: small_state(0)))


@pytest.mark.slow
def test_training_resumes_from_the_previous_checkpoint_when_the_latest_is_corrupt(
    tmp_path, reference_workdir, compilation_cache):
  workdir = copy_of(reference_workdir, tmp_path)
  state_dir = os.path.join(workdir, 'checkpoints', '12', 'state')
  for directory, _, names in os.walk(state_dir):  # Every file of step 12's arrays, cut in half.
    for name in names:
      truncate(os.path.join(directory, name))
  # A fresh process, as after a real crash (in-process, earlier Orbax restores in this module
  # hid the corruption: see the session notes).
  returncode, output = finish(start_driver(workdir, compilation_cache))
  assert returncode == 0, output[-3000:]
  assert os.listdir(os.path.join(workdir, 'checkpoints_unreadable')) == ['12']
  expected = train_losses(reference_workdir)
  assert train_losses(workdir) == {step: expected[step] for step in (10, 11, 12)}  # From step 9.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['12', '6', '9']


# --- Failed saves -----------------------------------------------------------------------------


class FailingSaves:
  """Makes Orbax's save raise a disk-full error for chosen steps, synchronously or later."""

  def __init__(self, monkeypatch, steps, when='at_save'):
    self.steps = set(steps)
    self._failing_step = None
    original_save = ocp.CheckpointManager.save
    original_wait = ocp.CheckpointManager.wait_until_finished

    def save(manager, step, *args, **kwargs):
      if step in self.steps and when == 'at_save':
        raise OSError(errno.ENOSPC, 'No space left on device')
      result = original_save(manager, step, *args, **kwargs)
      if step in self.steps:  # 'in_background': the error shows when waiting for the save.
        self._failing_step = step
      return result

    def wait_until_finished(manager):
      original_wait(manager)
      if self._failing_step is not None:
        step, self._failing_step = self._failing_step, None
        shutil.rmtree(os.path.join(manager.directory, str(step)))
        manager.reload()
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
    monkeypatch.setattr(ocp.CheckpointManager, 'wait_until_finished', wait_until_finished)


@pytest.mark.parametrize('when', ['at_save', 'in_background'])
def test_a_failed_save_is_reported_and_retried_at_the_next_checkpoint(
    tmp_path, monkeypatch, caplog, when):
  FailingSaves(monkeypatch, steps=[2], when=when)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  with caplog.at_level(logging.ERROR):
    for step in (1, 2, 3):
      ckpt.save(step, small_state(step), {'step': step}, {'plateau': {}})
    ckpt.wait_until_finished()
  assert ckpt.latest_step() == 3
  assert sorted(os.listdir(ckpt.directory)) == ['1', '3']
  message = next(r.getMessage() for r in caplog.records if 'failed' in r.getMessage())
  assert message.startswith(f'saving checkpoint step 2 in {ckpt.directory} failed (OSError: '
                            '[Errno 28] No space left on device); the newest complete checkpoint '
                            'is step 1. Training continues; the next checkpoint retries')


def test_repeated_or_final_save_failures_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
  FailingSaves(monkeypatch, steps=[2, 3, 4])
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, small_state(1), {'step': 1}, {'plateau': {}})
  ckpt.save(2, small_state(2), {'step': 2}, {'plateau': {}})
  ckpt.save(3, small_state(3), {'step': 3}, {'plateau': {}})
  with pytest.raises(UserError, match=r'saving checkpoint step 4 .* the newest complete checkpoint '
                     r'is step 1\. Free disk space or make --workdir writable, then rerun'):
    ckpt.save(4, small_state(4), {'step': 4}, {'plateau': {}})
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'final'))
  ckpt.save(3, small_state(3), {'step': 3}, {'plateau': {}})  # The last save of a run fails.
  with pytest.raises(UserError, match='saving checkpoint step 3 .* newest complete checkpoint is '
                     'none'):
    ckpt.wait_until_finished()


class DiskFullInOrbax:
  """The real Orbax save runs and fails deep inside: writing the 'checksums' item's file of a
  chosen step raises ENOSPC after half the file is written, inside the step's temporary directory.

  Nothing here cleans up: the partial directory is left for the Checkpointer to remove.
  """

  def __init__(self, monkeypatch, step):
    self.partial_seen = []  # The step's directory entries when the write failed.
    original = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

    async def save_fn(handler, item, directory):
      step_dir = os.path.dirname(str(directory))
      if os.path.basename(step_dir).startswith(f'{step}.orbax-checkpoint-tmp') and \
          os.path.basename(str(directory)).startswith('checksums'):
        path = directory / handler._filename  # pylint: disable=protected-access
        path.write_text(json.dumps(item)[:10])
        self.partial_seen.append((step_dir, sorted(os.listdir(step_dir))))
        raise OSError(errno.ENOSPC, 'No space left on device')
      return await original(handler, item, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', save_fn)


def test_a_real_failed_save_leaves_no_partial_directory(tmp_path, monkeypatch, caplog):
  disk_full = DiskFullInOrbax(monkeypatch, step=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'retried'))
  with caplog.at_level(logging.ERROR):
    for step in (1, 2, 3):  # Saving step 3 first finds that step 2 failed.
      ckpt.save(step, small_state(step), {'step': step}, {'plateau': {}})
    ckpt.wait_until_finished()
  ckpt.close()
  (step_dir, entries), = disk_full.partial_seen
  assert {'state.orbax-checkpoint-tmp', 'checksums.orbax-checkpoint-tmp'} <= set(entries)
  assert any(r.getMessage().startswith('saving checkpoint step 2') for r in caplog.records)
  assert not os.path.exists(step_dir)
  assert sorted(os.listdir(ckpt.directory)) == ['1', '3']
  # The final save of a run fails: a UserError, and still no partial directory.
  disk_full = DiskFullInOrbax(monkeypatch, step=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'final'))
  ckpt.save(1, small_state(1), {'step': 1}, {'plateau': {}})
  ckpt.save(2, small_state(2), {'step': 2}, {'plateau': {}})
  with pytest.raises(UserError, match='saving checkpoint step 2 .* newest complete checkpoint is '
                     'step 1'):
    ckpt.wait_until_finished()
  assert len(disk_full.partial_seen) == 1
  assert sorted(os.listdir(ckpt.directory)) == ['1']


# --- NaN / Inf --------------------------------------------------------------------------------


def test_a_non_finite_step_changes_nothing_and_is_flagged():
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = optim.create_optimizer(config)
  state = train.create_train_state(model, tx, jax.random.key(0), (67, 67, 1))
  step = jax.jit(lambda s, b: train.train_step(s, b, jnp.float32(0.01), jax.random.key(1),
                                              model=model, tx=tx))
  images = jax.random.normal(jax.random.key(2), (8, 67, 67, 1))
  batch = {'image': images.at[3, 10, 10, 0].set(jnp.nan), 'label': jnp.arange(8) % 10}
  after, sums = step(state, batch)
  jax.tree.map(np.testing.assert_array_equal, (after.params, after.opt_state.inner_state),
               (state.params, state.opt_state.inner_state))
  assert int(after.step) == 1
  assert int(sums['nonfinite_steps']) == 1 and int(sums['first_nonfinite_step']) == 1
  assert float(sums['count']) == 0 and float(sums['loss']) == 0
  after, sums = step(after, dict(batch, image=images))
  assert int(sums['nonfinite_steps']) == 0 and int(sums['first_nonfinite_step']) > 10**9
  assert not np.array_equal(after.params['fc8']['bias'], state.params['fc8']['bias'])


def test_an_update_that_overflows_is_applied_and_left_to_the_parameter_check(tmp_path):
  # The guard is decided from the loss and gradients before the update (in place, under a
  # lax.cond). A class bias of 1e10 with every label that class: the loss is ~0, every gradient
  # finite, but weight decay's lr * wd * w = 1e38 * 5e-4 * 1e10 overflows float32.
  config = tiny_config()
  model = registry.create_model(config.model)
  tx = optim.create_optimizer(config)
  state = train.create_train_state(model, tx, jax.random.key(0), (67, 67, 1))
  params = jax.tree.map(lambda x: x, state.params)
  params['fc8']['bias'] = params['fc8']['bias'].at[0].set(1e10)
  state = state.replace(params=params)
  batch = {'image': jax.random.normal(jax.random.key(2), (8, 67, 67, 1)),
           'label': jnp.zeros(8, jnp.int32)}
  after, sums = jax.jit(lambda s: train.train_step(s, batch, jnp.float32(1e38), jax.random.key(1),
                                                   model=model, tx=tx))(state)
  assert int(sums['nonfinite_steps']) == 0 and np.isfinite(float(sums['loss']))
  assert not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(after.params))
  with pytest.raises(UserError, match='^the parameters are not finite at step 1: '):
    train.NanPolicy('skip', checkpoint.Checkpointer(str(tmp_path))).check_params(after.params, 1)


def test_gradient_clipping_scales_the_global_norm():
  config = tiny_config(grad_clip_norm=1.0, learning_rate=0.01, momentum=0.9, weight_decay=0.0)
  tx = optim.create_optimizer(config)
  params = {'a': jnp.ones(3), 'b': jnp.zeros(4)}
  opt_state = tx.init(params)
  grads = [{'a': jnp.array([3.0, 4.0, 0.0]), 'b': jnp.zeros(4)},  # Norm 5: scaled to 1.
           {'a': jnp.array([0.1, 0.0, 0.0]), 'b': jnp.array([0.0, 0.2, 0.0, 0.0])}]  # Kept.
  w, v = np.ones(3), np.zeros(3)
  for g in grads:
    updates, opt_state = tx.update(g, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    g_a = np.asarray(g['a']) / max(1.0, np.sqrt(sum(float(jnp.sum(x**2)) for x in g.values())))
    v = 0.9 * v - 0.01 * g_a
    w = w + v
  np.testing.assert_allclose(params['a'], w, rtol=1e-6)
  assert tiny_config().grad_clip_norm == 0  # Off by default: the paper does not clip.


def with_nan_batch_at(dataset, bad_step):
  """`dataset` whose training batch of step `bad_step` (1-based) contains a NaN."""
  def train_batches(start=data.Position()):
    for step, batch in enumerate(dataset.train_batches(start), start.step + 1):
      if step == bad_step:
        batch = dict(batch, image=np.full_like(batch['image'], np.nan))
      yield batch
  return dataclasses.replace(dataset, train_batches=train_batches)


@pytest.mark.slow
def test_nan_policy_stop_names_the_step_and_keeps_the_checkpoints(
    tmp_path, reference_workdir, mock_fashion_mnist):
  workdir = copy_of(reference_workdir, tmp_path)
  # The example: a huge learning rate, from the checkpoint at step 12.
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(run_config(num_train_steps=18, learning_rate=1e30), workdir)
  message = str(error.value)
  found = re.match(r'non-finite loss or gradients at step (\d+); training stopped '
                   r'without applying it \(the newest checkpoint, step (\d+) in ', message)
  bad_step, newest = int(found[1]), int(found[2])
  assert 12 < bad_step <= 18 and '\n' not in message
  assert "config.nan_policy='skip'" in message and 'config.grad_clip_norm' in message
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert saved[-1] == newest < bad_step
  rows = merged_rows(workdir)
  assert sorted(rows) == list(range(13, bad_step))  # Up to the step before the bad one.
  assert all(np.isfinite(row['train/loss']) for row in rows.values())



@pytest.mark.slow
@pytest.mark.parametrize('policy', ['stop', 'skip'])
def test_an_overflowed_update_stops_training_naming_the_parameters(
    tmp_path, reference_workdir, mock_fashion_mnist, monkeypatch, policy):
  # Step 15 is then non-finite: under 'stop' that must not be reported as step 15's fault.
  workdir = copy_of(reference_workdir, tmp_path)
  step = train.train_step

  def overflowing(state, batch, lr, key, *, model, tx):  # Step 14's update overflows fc8's bias.
    new, sums = step(state, batch, lr, key, model=model, tx=tx)
    bias = new.params['fc8']['bias']
    bias = jnp.where(state.step == 13, bias.at[0].set(jnp.inf), bias)
    return new.replace(params={**new.params, 'fc8': {**new.params['fc8'], 'bias': bias}}), sums

  monkeypatch.setattr(train, 'train_step', overflowing)
  with pytest.raises(UserError, match=r'^the parameters are not finite at step 1[4-8]: an update '
                     r'from finite gradients overflowed float32 .*, step 12 in '):
    train.train_and_evaluate(run_config(num_train_steps=18, nan_policy=policy), workdir)
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert saved[-1] == 12  # Nothing saved after the overflow.

@pytest.mark.slow
def test_nan_policy_skip_skips_the_step_and_trains_on(
    tmp_path, reference_workdir, mock_fashion_mnist):
  workdir = copy_of(reference_workdir, tmp_path)
  config = run_config(num_train_steps=15, nan_policy='skip')
  dataset = with_nan_batch_at(data.create_dataset(config), 14)
  state = train.train_and_evaluate(config, workdir, dataset)
  rows = merged_rows(workdir)
  assert rows[14]['train/skipped_steps'] == 1 and 'train/loss' not in rows[14]
  assert rows[13]['train/skipped_steps'] == 0 and rows[15]['train/skipped_steps'] == 0
  assert np.isfinite(rows[15]['train/loss'])
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))
  assert '15' in os.listdir(os.path.join(workdir, 'checkpoints'))


# --- Metrics files after crashes --------------------------------------------------------------


def test_metrics_rows_of_a_rerun_step_replace_the_old_ones_and_a_torn_line_is_cut(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n'
            '{"step": 2, "eval/loss": 1.7}\n{"step": 3, "train/lo')  # Killed mid-line.
  writer = metrics.JsonlWriter(path)  # The resumed run, from a checkpoint at step 1.
  writer.write_scalars(2, {'train/loss': 1.25})
  assert metrics.read_metrics(path) == {1: {'train/loss': 2.0},
                                        2: {'train/loss': 1.25, 'eval/loss': 1.7}}
  writer.close()
  assert all(json.loads(line) for line in open(path, encoding='utf-8'))


# --- Invalid configs: one line naming the key and the fix, before any compute -----------------


CONFIG_ERRORS = [
    ({'learning_rate': -0.01}, 'config.learning_rate=-0.01 must be positive'),
    ({'batch_size': 0}, 'config.batch_size=0 must be positive'),
    ({'eval_batch_size': -8}, 'config.eval_batch_size=-8 must be positive'),
    ({'model.activation': 'gelu'},
     "config.model.activation='gelu' is unknown; expected one of relu, tanh"),
    ({'optimizer': 'adam'}, "config.optimizer='adam' is unknown; expected one of paper_sgd"),
    ({'dataset': 'mnist'}, "config.dataset='mnist' is unknown; expected one of fashion_mnist"),
    ({'mesh.data': 3}, 'config.mesh (data=3, model=1) does not fit the 8 devices; choose sizes '
                       'whose product is 8'),
    ({'mesh.model': 0}, 'config.mesh.model=0 must be a positive device count, or -1 to fill'),
    ({'batch_size': 12}, 'config.batch_size=12 is not divisible by the 8 devices the batch is '
                         'split over'),
    ({'input.image_size': 32}, 'config.input.image_size=32 is too small for the alexnet model as '
                               'configured; use at least 67'),
    ({'momentum': 1.0}, 'config.momentum=1.0 must be in [0, 1)'),
    ({'weight_decay': -5e-4}, 'config.weight_decay=-0.0005 must be >= 0'),
    ({'lr_schedule': 'linear'}, "config.lr_schedule='linear' is unknown; expected one of plateau"),
    ({'lr_schedule': 'step', 'lr_step_epochs': (60, 30)},
     'config.lr_step_epochs=(60, 30) must be increasing positive epochs'),
    ({'model.dropout_rate': 1.0}, 'config.model.dropout_rate=1.0 must be in [0, 1)'),
    ({'model.towers': 3}, 'config.model.towers=3 must be 1 or 2'),
    # An even window is not centred on its channel (and the fused LRN's backward assumes it is).
    ({'model.lrn_n': 4}, 'config.model.lrn_n=4 must be an odd window size'),
    ({'model.lrn_beta': -1.0}, 'LRN needs k > 0, alpha >= 0 and beta > 0'),
    ({'model.pooling': 'max'}, "config.model.pooling='max' is unknown"),
    ({'model.conv_features': (8, 16, 24, 24)},
     'config.model.conv_features needs 5 widths and config.model.fc_features 2'),
    ({'nan_policy': 'ignore'}, "config.nan_policy='ignore' is unknown; expected one of stop, skip"),
    ({'grad_clip_norm': -1.0}, 'config.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off)'),
    ({'num_eval_steps': 0}, 'config.num_eval_steps=0 must be positive, or -1 for the whole '
                            'validation split'),
    ({'max_checkpoints_to_keep': 0}, 'config.max_checkpoints_to_keep=0 must be positive'),
    ({'batch_size': 128}, 'the training split has 96 examples, fewer than config.batch_size=128; '
                          'lower the batch size'),
]


@pytest.mark.parametrize('overrides, message', CONFIG_ERRORS,
                         ids=[','.join(o) for o, _ in CONFIG_ERRORS])
def test_invalid_config_values_are_one_line_errors_before_any_compute(
    tmp_path, mock_fashion_mnist, overrides, message):
  workdir = str(tmp_path / 'workdir')
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(tiny_config(**overrides), workdir)
  assert message in str(error.value) and '\n' not in str(error.value)
  assert not os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*'))


def test_a_checkpoint_of_another_architecture_is_a_one_line_error(
    tmp_path, reference_workdir, mock_fashion_mnist):
  workdir = copy_of(reference_workdir, tmp_path)
  with pytest.raises(UserError, match=r'holds a checkpoint of a different model \(config.model.'
                     r'conv_features: \[8, 16, 24, 24, 16\] there, \[8, 16, 24, 24, 32\] here\); '
                     'use a new --workdir or the config that wrote it'):
    train.train_and_evaluate(run_config(**{'model.conv_features': (8, 16, 24, 24, 32)}), workdir)


@pytest.mark.parametrize('flag, message', [
    ('--config.batch_sise=64', 'error: --config.batch_sise names a field the config does not have. '
                               'Did you mean "batch_size" instead of "batch_sise"? (run with '
                               '--helpfull to list the fields).'),
    ('--config.model.no_such_key=1', 'error: --config.model.no_such_key names a field the config '
                                     'does not have. Check its spelling against the config file'),
    ('--config.batch_size=abc', "error: flag --config.batch_size=abc: invalid literal for int() "
                                "with base 10: 'abc'"),
    ('--config=configs/no_such_config.py', 'error: cannot load --config=configs/no_such_config.py '
                                           '(no such file, or it failed to import); pass a config '
                                           'file such as configs/default.py.'),
])
def test_command_line_config_mistakes_are_one_line_errors(tmp_path, flag, message):
  result = subprocess.run(
      [sys.executable, 'run.py', '--config=configs/default.py', f'--workdir={tmp_path}', flag],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  # The last line; a config file that fails to load is reported after TensorFlow's start-up lines.
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]


def test_a_failed_metrics_write_is_reported_once_per_writer_and_training_goes_on(
    tmp_path, monkeypatch, caplog):
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  writer = metrics.create_writer(str(tmp_path), is_main_process=True)
  writer.write_scalars(1, {'train/loss': 1.0})

  def disk_full(self, step, scalars):
    raise OSError(errno.ENOSPC, 'No space left on device')

  def broken(self, step, scalars):
    raise RuntimeError('event file gone')

  with caplog.at_level(logging.ERROR):
    monkeypatch.setattr(metrics.JsonlWriter, 'write_scalars', disk_full)
    writer.write_scalars(2, {'train/loss': 0.5})  # Raises nothing.
    writer.write_scalars(3, {'train/loss': 0.25})
    monkeypatch.undo()
    writer.write_scalars(4, {'train/loss': 0.125})  # Writing works again.
    monkeypatch.setattr(metric_writers.SummaryWriter, 'write_scalars', broken)
    writer.write_scalars(5, {'train/loss': 0.0625})  # The other writer's failure: said too.
    monkeypatch.undo()
  writer.close()
  errors = [r.getMessage() for r in caplog.records if 'Could not write metrics' in r.getMessage()]
  assert errors == [
      'Could not write metrics to metrics.jsonl (OSError: [Errno 28] No space left on device); '
      'training goes on, its rows are lost until writing works again.',
      'Could not write metrics to TensorBoard (RuntimeError: event file gone); training goes on, '
      'its rows are lost until writing works again.']
  assert [r['step'] for r in metrics.read_jsonl(os.path.join(str(tmp_path), 'metrics.jsonl'))
          ] == [1, 4, 5]
  tensorboard_steps = sorted(step for step, tag in tensorboard_scalars(str(tmp_path))
                             if tag == 'train/loss')
  assert tensorboard_steps == [1, 2, 3, 4]  # Each writer lost only its own rows.
