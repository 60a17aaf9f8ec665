"""A run's directory: its config record, checkpoints and metrics, named in this one place.

    <workdir>/config.json             the config the run started with (never rewritten by a resume)
    <workdir>/config_history.jsonl    one line per resume that changed the config:
                                      {"step": 20, "changes": {"batch_size": [1000, 2000]}}
                                      (the checkpoint step it resumed from; per dotted key, the
                                      value before and after)
    <workdir>/checkpoints/<step>/     Orbax checkpoints (alexnet_jax.checkpoint)
    <workdir>/checkpoints_unreadable/ damaged checkpoints moved aside, never deleted
    <workdir>/metrics.jsonl           one JSON row per logged step (alexnet_jax.metrics)
    <workdir>/events.out.tfevents.*   the same rows for TensorBoard

The config in force at checkpoint step S is config.json with every history line of a step below
S applied in file order (a resume from S changes what the steps after S are trained with). A run
that starts from scratch (no checkpoint to resume) writes config.json anew and drops the history.
"""

import json
import os
from typing import Any

import ml_collections
from absl import logging

from alexnet_jax.errors import UserError

ABSENT = '<absent>'  # The value of a key one of two configs does not have, in a change record.


class Workdir:
  """The files of one run; `path` as the user gave it (messages show it that way)."""

  def __init__(self, path: str):
    self.path = path
    self.config_file = os.path.join(path, 'config.json')
    self.history_file = os.path.join(path, 'config_history.jsonl')
    self.checkpoints = os.path.join(os.path.abspath(path), 'checkpoints')
    self.unreadable_checkpoints = os.path.join(os.path.abspath(path), 'checkpoints_unreadable')
    self.metrics_file = os.path.join(path, 'metrics.jsonl')

  def check_writable(self) -> None:
    """Creates the directory; UserError if it cannot be written."""
    try:
      os.makedirs(self.path, exist_ok=True)
      probe = os.path.join(self.path, f'.write_test.{os.getpid()}')  # One per process: no races.
      with open(probe, 'w', encoding='utf-8') as f:
        f.write('ok')
      os.remove(probe)
    except OSError as e:
      raise UserError(f'workdir {self.path!r} is not writable ({e.strerror}); '
                      'pass a writable --workdir.') from e

  def has_config(self) -> bool:
    return os.path.exists(self.config_file)

  def config(self, step: int | None = None) -> ml_collections.ConfigDict:
    """The config in force at checkpoint `step` (None: the latest); UserError if none is saved."""
    try:
      with open(self.config_file, encoding='utf-8') as f:
        values = json.load(f)
    except FileNotFoundError as e:
      raise UserError(f'{self.config_file} does not exist; --workdir must be a directory written '
                      'by run.py or alexnet_jax.convert.') from e
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, unreadable.
      raise UserError(f'{self.config_file} is damaged ({type(e).__name__}: {e}); restore it, or '
                      'rerun run.py with the config that trained this workdir (it writes '
                      'config.json).') from e
    if not isinstance(values, dict):
      raise UserError(f'{self.config_file} is damaged (a JSON {type(values).__name__}, not the '
                      'config object); restore it, or rerun run.py with the config that trained '
                      'this workdir.')
    for entry in self.history():
      if step is None or entry['step'] < step:
        for key, (_, new) in entry['changes'].items():
          _set(values, key, new)
    return ml_collections.ConfigDict(values)

  def saved_config(self, step: int | None = None) -> ml_collections.ConfigDict | None:
    """For training: the config in force at checkpoint `step` (None: the latest), or None
    (warned) when it is missing or damaged.

    A run resumed without a usable record compares only the checkpoint's shapes, then writes
    config.json anew from its own config (`write_config`).
    """
    if not self.has_config():
      return None
    try:
      return self.config(step)
    except UserError as e:
      logging.warning('%s Resuming compares only the checkpoint\'s shapes; config.json is '
                      'written anew from this run\'s config.', e)
      return None

  def history(self) -> list[dict[str, Any]]:
    """The config_history.jsonl entries in file order ([] if there is none)."""
    if not os.path.exists(self.history_file):
      return []
    entries = []
    with open(self.history_file, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        try:
          entries.append(json.loads(line))
        except ValueError as e:
          if line.endswith('\n'):  # A torn last line is a crash while writing it: skip it.
            raise UserError(f'line {number} of {self.history_file} is not JSON ({e}); repair '
                            'or delete that line.') from e
    return entries

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Starts the record of a run from scratch: config.json, no history."""
    os.makedirs(self.path, exist_ok=True)
    with open(self.config_file, 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
    if os.path.exists(self.history_file):
      os.remove(self.history_file)

  def record_resume(self, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Records a resume from checkpoint `step` with `changes` (against the config in force at
    `step`): it supersedes the lines of earlier resumes from `step` or later, whose runs wrote
    nothing that is still resumed from (a rerun of a finished run, a crash before the next save,
    or later checkpoints moved aside)."""
    kept = [entry for entry in self.history() if entry['step'] < step]
    if changes:
      kept.append({'step': int(step), 'changes': {k: list(v) for k, v in changes.items()}})
    if not kept and not os.path.exists(self.history_file):
      return
    with open(self.history_file + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(entry) + '\n' for entry in kept)
    os.replace(self.history_file + '.tmp', self.history_file)


def flatten(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """{'model.towers': 2, ...}: dotted keys, values as JSON gives them back (tuples as lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    config = json.loads(config.to_json_best_effort())
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update({f'{key}.{k}': v for k, v in flatten(value).items()})
    else:
      flat[key] = value
  return flat


def differences(saved: ml_collections.ConfigDict,
                config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (saved value, new value)} for every key whose value differs, sorted by key."""
  old, new = flatten(saved), flatten(config)
  return {key: (old.get(key, ABSENT), new.get(key, ABSENT)) for key in sorted(set(old) | set(new))
          if old.get(key, ABSENT) != new.get(key, ABSENT)}


def _set(values: dict[str, Any], dotted_key: str, value: Any) -> None:
  *parents, leaf = dotted_key.split('.')
  for parent in parents:
    values = values.setdefault(parent, {})
  if value == ABSENT:
    values.pop(leaf, None)
  else:
    values[leaf] = value
