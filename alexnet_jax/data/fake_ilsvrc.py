"""Writes a small fake ILSVRC-2012 manual-download directory, laid out like the real tars.

`ILSVRC2012_img_train.tar` holds one `<synset>.tar` per class with flat `<synset>_<i>.JPEG` members;
`ILSVRC2012_img_val.tar` holds flat `ILSVRC2012_val_%08d.JPEG` members. The TFDS `imagenet2012`
builder labels the validation images by pairing the *sorted* member names with the lines of its
bundled `validation_labels.txt` (line i labels ILSVRC2012_val_{i+1:08d}), so the fake validation
set is the first `num_val` real validation file names and the classes are their real synsets.
Used by the tests (tiny images) and by the benchmark (realistic ~500x375 images).
"""

import io
import pathlib
import tarfile

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'


def validation_synsets(num_val: int) -> list[str]:
  """Synsets of ILSVRC2012_val_00000001 .. num_val, from the builder's own label file."""
  labels_file = tfds.core.tfds_path(imagenet_common._VALIDATION_LABELS_FNAME)  # noqa: SLF001
  return labels_file.read_text().split()[:num_val]


def _jpeg_bytes(rng: np.random.Generator, height: int, width: int, tint: np.ndarray,
                texture: float) -> bytes:
  # A smooth random field plus a class tint, plus half-resolution noise of std `texture` so the
  # file size (and entropy-decoding work) can match photos: texture=28 gives ~110 KB at 500x375,
  # ImageNet's average JPEG size.
  coarse = rng.uniform(0, 255, size=(max(height // 16, 2), max(width // 16, 2), 3))
  image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
  pixels = np.asarray(image, np.float32) * 0.6 + tint * 0.4
  if texture:
    noise = rng.normal(128, 2 * texture, (max(height // 2, 1), max(width // 2, 1), 3))
    noise = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).resize((width, height),
                                                                           Image.BILINEAR)
    pixels += np.asarray(noise, np.float32) - 128
  buffer = io.BytesIO()
  Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_fake_ilsvrc(manual_dir: str | pathlib.Path, *, num_val: int = 8,
                      train_per_class: int = 4, sizes: tuple[tuple[int, int], ...] = ((30, 40),),
                      texture: float = 0.0, corrupt_train: int = 0, corrupt_val: int = 0,
                      seed: int = 0) -> list[str]:
  """Writes both tars into `manual_dir` and returns the sorted synsets used as classes.

  `sizes` are (height, width) cycled through the images; `texture`: see `_jpeg_bytes`. The first
  `corrupt_train` training images of the first class and the first `corrupt_val` validation images
  are garbage behind a valid JPEG header: no decoder accepts them, and only decoding finds out.
  """
  manual_dir = pathlib.Path(manual_dir)
  manual_dir.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  val_synsets = validation_synsets(num_val)
  synsets = sorted(set(val_synsets))
  tints = {synset: rng.uniform(0, 255, size=3) for synset in synsets}
  corrupt = b'\xff\xd8\xff\xe0' + bytes(rng.integers(0, 256, size=200, dtype=np.uint8))
  image_index = 0

  def next_jpeg(synset: str) -> bytes:
    nonlocal image_index
    height, width = sizes[image_index % len(sizes)]
    image_index += 1
    return _jpeg_bytes(rng, height, width, tints[synset], texture)

  with tarfile.open(manual_dir / TRAIN_TAR, 'w') as train_tar:
    for class_index, synset in enumerate(synsets):
      buffer = io.BytesIO()
      with tarfile.open(fileobj=buffer, mode='w') as class_tar:
        for i in range(train_per_class):
          bad = class_index == 0 and i < corrupt_train
          _add_member(class_tar, f'{synset}_{i}.JPEG', corrupt if bad else next_jpeg(synset))
      _add_member(train_tar, f'{synset}.tar', buffer.getvalue())
  with tarfile.open(manual_dir / VAL_TAR, 'w') as val_tar:
    for i, synset in enumerate(val_synsets):
      data = corrupt if i < corrupt_val else next_jpeg(synset)
      _add_member(val_tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', data)
  return synsets
