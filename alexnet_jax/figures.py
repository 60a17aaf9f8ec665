"""The paper's figures from a trained model, as PNGs, by one command:

    python -m alexnet_jax.figures --workdir=workdirs/default --output_dir=figures

conv1_filters.png: Fig. 3, every conv1 kernel, one row per tower (the paper's 96 kernels: two rows
  of 48, GPU 1 above GPU 2), each kernel contrast-stretched on its own.
nearest_neighbours.png: Fig. 4 (right), one row per query image of the evaluation split: the
  query, then the evaluation images whose fc7 features are nearest in Euclidean distance.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_jax import cli, data, features, trained_model  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402

GAP = 1  # Pixels of background between tiles.
BACKGROUND = 255


def _stretch(x: np.ndarray) -> np.ndarray:
  """One tile to uint8, its own minimum black and maximum white."""
  low, high = x.min(), x.max()
  return np.round(255 * (x - low) / max(high - low, 1e-12)).astype(np.uint8)


def tile_grid(tiles: np.ndarray, scale: int = 1) -> np.ndarray:
  """[rows, cols, h, w, c] float tiles -> one uint8 image [H, W, c] with GAP-pixel separators."""
  rows, cols, h, w, c = tiles.shape
  th, tw = h * scale, w * scale
  grid = np.full((rows * (th + GAP) + GAP, cols * (tw + GAP) + GAP, c), BACKGROUND, np.uint8)
  for r in range(rows):
    for col in range(cols):
      tile = np.kron(_stretch(tiles[r, col]), np.ones((scale, scale, 1), np.uint8))
      y, x = GAP + r * (th + GAP), GAP + col * (tw + GAP)
      grid[y:y + th, x:x + tw] = tile
  return grid


def conv1_mosaic(params, scale: int = 4) -> np.ndarray:
  """conv1 kernels [towers, kh, kw, in, out] (or [kh, kw, in, out]) -> rows = towers."""
  kernel = np.asarray(params['conv1']['kernel'])
  if kernel.ndim == 4:  # A single-tower module without the tower axis (LeNet-5).
    kernel = kernel[None]
  tiles = np.moveaxis(kernel, -1, 1)  # [towers, out, kh, kw, in]
  return tile_grid(tiles, scale)


def nearest_neighbours(query_features: np.ndarray, pool_features: np.ndarray, count: int,
                       exclude_self: bool = True) -> np.ndarray:
  """Indices [queries, count] of the nearest pool rows (Euclidean), nearest first.

  With `exclude_self`, query i is pool row i and is not its own neighbour.
  """
  distances = (np.sum(query_features ** 2, 1)[:, None] - 2 * query_features @ pool_features.T
               + np.sum(pool_features ** 2, 1)[None, :])
  if exclude_self:
    distances[np.arange(len(query_features)), np.arange(len(query_features))] = np.inf
  return np.argsort(distances, axis=1, kind='stable')[:, :count]


def neighbour_mosaic(images: np.ndarray, queries: int, neighbours: np.ndarray) -> np.ndarray:
  order = np.concatenate([np.arange(queries)[:, None], neighbours], axis=1)
  return tile_grid(images[order])


def _save(image: np.ndarray, path: str) -> None:
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def write_conv1_figure(trained: trained_model.TrainedModel, output_dir: str,
                       scale: int = 4) -> str:
  """Fig. 3 needs only the parameters (no data set); returns the PNG's path."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, 'conv1_filters.png')
  _save(conv1_mosaic(trained.params, scale), path)
  return path


def write_neighbours_figure(trained: trained_model.TrainedModel, eval_batches, output_dir: str,
                            queries: int = 5, neighbours: int = 6, pool: int = 2000) -> str:
  """Fig. 4 (right) from the first `pool` evaluation images; returns the PNG's path."""
  feats, _, images = features.features_of_batches(trained, eval_batches, pool)
  if len(feats) <= max(queries, neighbours):
    raise UserError(f'the evaluation split has only {len(feats)} images; need more than '
                    f'{max(queries, neighbours)} for --queries/--neighbours.')
  nearest = nearest_neighbours(feats[:queries], feats, neighbours)
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, 'nearest_neighbours.png')
  _save(neighbour_mosaic(images, queries, nearest), path)
  return path


def write_figures(trained: trained_model.TrainedModel, eval_batches, output_dir: str,
                  queries: int = 5, neighbours: int = 6, pool: int = 2000,
                  scale: int = 4) -> dict[str, str]:
  """Writes both PNGs into output_dir; returns {figure name: path}."""
  return {'conv1_filters': write_conv1_figure(trained, output_dir, scale),
          'nearest_neighbours': write_neighbours_figure(trained, eval_batches, output_dir,
                                                        queries, neighbours, pool)}


FLAGS = flags.FLAGS


def main(argv):
  del argv
  trained = cli.load_trained_model()
  # conv1 first: it needs no data, so it is written even where the data set is not prepared.
  print(f'wrote {write_conv1_figure(trained, FLAGS.output_dir)}', flush=True)
  dataset = data.create_dataset(trained.config)
  path = write_neighbours_figure(trained, dataset.eval_batches[''](), FLAGS.output_dir,
                                 FLAGS.queries, FLAGS.neighbours, FLAGS.pool)
  print(f'wrote {path}')


def define_flags() -> None:
  cli.define_trained_model_flags()
  flags.DEFINE_string('output_dir', 'figures', 'Where the PNGs go.')
  flags.DEFINE_integer('queries', 5, 'Query images (rows of the neighbour figure).')
  flags.DEFINE_integer('neighbours', 6, 'Neighbours shown per query.')
  flags.DEFINE_integer('pool', 2000, 'Evaluation images searched for neighbours.')


if __name__ == '__main__':
  cli.run(main, define_flags)
