"""Evaluates an ensemble of trained models (the paper's Table 2, "5 CNNs" / "7 CNNs"):

    python -m alexnet_jax.ensemble --workdirs=workdirs/seed0,workdirs/seed1,workdirs/seed2

Each member predicts with its own parameters (and architecture), the softmax outputs are
averaged, and top-1/top-5 errors are printed for every member and for the average. All members
must be trained on the same data set with the same evaluation input.
"""

import os
from collections.abc import Iterator, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from alexnet_jax import cli, data, metrics, trained_model  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402


def _logits_fn(member: trained_model.TrainedModel):
  @jax.jit
  def logits(images):  # [B, H, W, C] or [B, crops, H, W, C] -> [B, crops, classes]
    crops = images if images.ndim == 5 else images[:, None]
    b, n = crops.shape[:2]
    out = member.model.apply({'params': member.params}, crops.reshape((b * n,) + crops.shape[2:]))
    return out.reshape(b, n, -1)
  return logits


def check_compatible(members: Sequence[trained_model.TrainedModel]) -> None:
  first = members[0].config
  for member in members[1:]:
    same = (member.config.dataset == first.dataset and member.class_names == members[0].class_names
            and member.config.input.to_dict() == first.input.to_dict())
    if not same:
      raise UserError('ensemble members must share the data set, classes and input config; '
                      f'{member.config.dataset} {member.config.input.to_dict()} differs from '
                      f'{first.dataset} {first.input.to_dict()}.')


def evaluate_ensemble(members: Sequence[trained_model.TrainedModel],
                      batches: Iterator[data.Batch], max_steps: int = -1) -> list[dict[str, float]]:
  """Metrics of every member, then of the ensemble (softmax averaged over members and crops)."""
  logits_fns = [_logits_fn(m) for m in members]
  totals = None
  for i, batch in enumerate(batches):
    if i == max_steps:
      break
    labels, mask = jnp.asarray(batch['label']), jnp.asarray(batch['mask'])
    member_logits = [fn(batch['image']) for fn in logits_fns]
    # classification_sums averages the softmax over axis 1: all members' crops, equally weighted.
    sums = [metrics.classification_sums(logits, labels, mask) for logits in member_logits]
    sums.append(metrics.classification_sums(jnp.concatenate(member_logits, axis=1), labels, mask))
    sums = jax.device_get(sums)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  if totals is None:
    raise UserError('the evaluation split produced no batches.')
  return [{k.removeprefix('eval/'): v for k, v in metrics.means(t, 'eval').items()}
          for t in totals]


def format_table(names: Sequence[str], results: Sequence[dict[str, float]]) -> str:
  width = max(len(n) for n in names)
  lines = [f'{"model":<{width}}  top-1 err  top-5 err']
  lines += [f'{name:<{width}}  {r["top1_error"]:9.4f}  {r["top5_error"]:9.4f}'
            for name, r in zip(names, results)]
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  members = ([trained_model.load(workdir=w) for w in FLAGS.workdirs]
             + [trained_model.load(checkpoint_path=c) for c in FLAGS.checkpoints])
  if len(members) < 2:
    raise UserError('an ensemble needs at least two members: --workdirs=A,B[,...].')
  check_compatible(members)
  dataset = data.create_dataset(members[0].config)
  results = evaluate_ensemble(members, dataset.eval_batches[''](), FLAGS.num_eval_steps)
  names = [f'{p} (step {m.step})' for p, m in zip(FLAGS.workdirs + FLAGS.checkpoints, members)]
  print(format_table(names + [f'ensemble of {len(members)}'], results))


def define_flags() -> None:
  flags.DEFINE_list('workdirs', [], 'Member workdirs (latest step each).')
  flags.DEFINE_list('checkpoints', [], 'Member step directories DIR/checkpoints/N.')
  flags.DEFINE_integer('num_eval_steps', -1, '-1: the whole evaluation split.')


if __name__ == '__main__':
  cli.run(main, define_flags)
