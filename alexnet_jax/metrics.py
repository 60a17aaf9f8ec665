"""Classification metrics and the metric writers (TensorBoard + metrics.jsonl + console).

clu's writers are stable but see few releases, so everything clu-specific stays in this file.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers


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


class JsonlWriter(metric_writers.interface.MetricWriter):
  """Writes one JSON object per write_scalars call: {"step": N, "train/loss": ...}."""

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str, is_main_process: bool) -> metric_writers.MetricWriter:
  """TensorBoard event files and metrics.jsonl in workdir on process 0; nothing elsewhere."""
  if not is_main_process:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(workdir),
      JsonlWriter(os.path.join(workdir, 'metrics.jsonl')),
  ])


def read_jsonl(path: str) -> list[dict[str, float]]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
