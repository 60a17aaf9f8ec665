"""Classification metrics and the metric writers (TensorBoard + metrics.jsonl + console).

clu's writers are stable but see few releases, so everything clu-specific stays in this file.
clu is imported only where a run writes (`create_writer`): its package imports TensorFlow for
the TensorBoard writer, 2-3 s that a tool's --help or a weight conversion need not pay.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from alexnet_jax.workdir import Workdir


def top_k_error_count(probs_or_logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per example: 1.0 where the label is not among the k highest scores (0 <= k <= classes)."""
  k = min(k, probs_or_logits.shape[-1])
  _, top = jax.lax.top_k(probs_or_logits, k)
  return 1.0 - jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def classification_sums(logits: jax.Array, labels: jax.Array,
                        mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Sums over the batch of loss and top-1/top-5 errors, and the example count.

  `logits` may carry a crop axis, [B, crops, classes]: the softmax is averaged over the crops
  (the paper's 10-crop test) and the loss is the negative log of that average.
  """
  if logits.ndim == 3:
    probs = jax.nn.softmax(logits, axis=-1).mean(axis=1)
    log_probs = jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))
  else:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
  if mask is None:
    mask = jnp.ones(labels.shape, jnp.float32)
  mask = mask.astype(jnp.float32)
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return {
      'loss': jnp.sum(nll * mask),
      'top1_error': jnp.sum(top_k_error_count(log_probs, labels, 1) * mask),
      'top5_error': jnp.sum(top_k_error_count(log_probs, labels, 5) * mask),
      'count': jnp.sum(mask),
  }


def means(sums: Mapping[str, Any], prefix: str) -> dict[str, float]:
  """{'<prefix>/loss': mean, ...} from accumulated sums that include 'count'."""
  count = float(sums['count'])
  return {f'{prefix}/{name}': float(value) / max(count, 1.0)
          for name, value in sums.items() if name != 'count'}


class JsonlWriter:
  """Writes one JSON object per write_scalars call: {"step": N, "train/loss": ...}.

  Appends, one flushed line per row. After a crash and resume the file holds the rows written
  after the last checkpoint twice; `read_metrics` keeps the newest value per step and key.
  It has the methods of clu's MetricWriter that a run calls (write_scalars, write_hparams,
  flush, close).
  """

  def __init__(self, path: str):
    _drop_torn_last_line(path)
    self._file = open(path, 'a', encoding='utf-8', buffering=1)  # Line-buffered.

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + '\n')

  def write_hparams(self, hparams: Mapping[str, Any]):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


class MetricWriter:
  """What a run writes its metrics to: each of `writers` (name -> a clu MetricWriter or a
  JsonlWriter).

  A full disk must not end training: a failed write is reported once per writer and skipped,
  for that writer only, and training goes on.
  """

  def __init__(self, writers: Mapping[str, Any]):
    self._writers = dict(writers)
    self._reported: set[str] = set()  # Writers whose failure was reported.

  def _each(self, method: str, *args) -> None:
    for name, writer in self._writers.items():
      try:
        getattr(writer, method)(*args)
      except Exception as e:  # pylint: disable=broad-except  # OSError, TensorFlow's own errors.
        if name not in self._reported:
          first_line = (str(e).strip().splitlines() or [''])[0][:200]
          logging.error('Could not write metrics to %s (%s: %s); training goes on, its rows are '
                        'lost until writing works again.', name, type(e).__name__, first_line)
          self._reported.add(name)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._each('write_scalars', step, scalars)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._each('write_hparams', hparams)

  def flush(self) -> None:
    self._each('flush')

  def close(self) -> None:
    self._each('close')


def create_writer(workdir: str, is_main_process: bool) -> MetricWriter:
  """TensorBoard event files and metrics.jsonl in workdir on process 0; nothing elsewhere."""
  if not is_main_process:
    return MetricWriter({})
  from clu import metric_writers  # pylint: disable=import-outside-toplevel  # Imports TF.
  return MetricWriter({'TensorBoard': metric_writers.SummaryWriter(workdir),
                       'metrics.jsonl': JsonlWriter(Workdir(workdir).metrics_file)})


def _drop_torn_last_line(path: str) -> None:
  """Cuts a last line that a killed process left without its newline."""
  if not os.path.exists(path):
    return
  with open(path, 'rb+') as f:
    content = f.read()
    if content and not content.endswith(b'\n'):
      f.truncate(content.rfind(b'\n') + 1)


def read_jsonl(path: str) -> list[dict[str, float]]:
  """All rows in file order (a torn line left by a killed writer, or a damaged one, is skipped)."""
  rows = []
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def read_metrics(path: str) -> dict[int, dict[str, float]]:
  """{step: {name: value}}: rows merged per step, a later row's value replacing an earlier one.

  A run that resumes after a crash rewrites the steps since its checkpoint; their rows come later
  in the file, so the newest value is the one of the run that went on.
  """
  merged: dict[int, dict[str, float]] = {}
  for row in read_jsonl(path):
    merged.setdefault(int(row['step']), {}).update(
        {k: v for k, v in row.items() if k != 'step'})
  return dict(sorted(merged.items()))
