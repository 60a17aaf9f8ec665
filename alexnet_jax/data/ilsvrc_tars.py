"""Checks the ILSVRC-2012 manual-download tars before TFDS spends hours preparing them.

A tar made of random bytes, cut short by an interrupted download, or overwritten in the middle
would otherwise end the preparation with a `tarfile.ReadError` traceback that names no file (or,
for damage in the middle, TFDS would silently prepare fewer images). `check_tars` reads only the
tar headers (seeking past the data): ~51,000 headers for the two release files, seconds where the
preparation takes hours. `find_damage(..., nested=True)` also reads the headers of the 1,000
class archives inside the training tar; it runs only after a preparation failed, to name the part.

Sizes and SHA-256 of the release files: TFDS's registered checksums
(tensorflow_datasets/datasets/imagenet2012/checksums.tsv; tests/damaged_inputs_test.py checks
that they still agree). Hashing 138 GB takes long, so it is left to the user (`sha256sum`).
"""

import pathlib
import tarfile

from absl import logging

from alexnet_jax.errors import UserError

# File name -> (bytes, sha256) of the ILSVRC-2012 release.
RELEASE_FILES = {
    'ILSVRC2012_img_train.tar': (
        147_897_477_120, 'b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb'),
    'ILSVRC2012_img_val.tar': (
        6_744_924_160, 'c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0'),
}
DOWNLOAD_URL = 'https://image-net.org/download-images'
BLOCK = tarfile.BLOCKSIZE  # 512: a tar is headers and data padded to blocks, ended by zero blocks.
# The errors a damaged tar raises from tarfile (EOFError: a stream that ends inside a member).
TAR_ERRORS = (tarfile.TarError, EOFError)


def _members_problem(tar: tarfile.TarFile, fileobj, nested: bool) -> str | None:
  """Why the open `tar` (reading `fileobj`) is incomplete or damaged, or None."""
  count = 0
  for member in tar:  # Raises ReadError where a member's data runs past the end of the file.
    count += 1
    if nested and member.name.endswith('.tar'):
      inner = tar.extractfile(member)
      problem = _tar_problem(inner, nested=False)
      if problem:
        return f'class archive {member.name}: {problem}'
  if not count:
    return 'no files in it'
  # tarfile stops quietly at a header it cannot parse after the first: the end of a tar is
  # a zero block, so anything else there is damage.
  fileobj.seek(tar.offset)
  end = fileobj.read(BLOCK)
  if end != bytes(BLOCK):
    what = 'it ends' if len(end) < BLOCK else 'a damaged header'
    return f'{what} at byte {tar.offset:,}, after {count:,} members'
  return None


def _tar_problem(fileobj, nested: bool) -> str | None:
  try:
    with tarfile.open(fileobj=fileobj, mode='r:') as tar:
      return _members_problem(tar, fileobj, nested)
  except TAR_ERRORS as e:
    return f'not a complete tar archive: {e}'


def find_damage(path: pathlib.Path, nested: bool = False) -> str | None:
  """What is wrong with the tar at `path` ('not a complete tar archive: ...', ...), or None.

  Reads headers only. `nested`: also the headers of the `.tar` members (the training tar's classes).
  """
  with open(path, 'rb') as f:
    return _tar_problem(f, nested)


def damaged_error(path: pathlib.Path, problem: str) -> UserError:
  """The one-line error for a damaged release file: what is wrong, and download it again."""
  size = path.stat().st_size
  release = RELEASE_FILES.get(path.name)
  expected = ''
  if release:
    expected = (f' The ILSVRC2012 release file is {release[0]:,} bytes (this one is {size:,}) '
                f'with SHA-256 {release[1]}; check a new download with `sha256sum {path}`.')
  return UserError(f'{path} is damaged ({problem}). Download it again from {DOWNLOAD_URL} and '
                   'replace it; nothing was prepared.'
                   f'{expected}')


def check_tars(paths: list[pathlib.Path]) -> None:
  """Raises UserError naming the first damaged tar; logs a size that is not the release's."""
  for path in paths:
    problem = find_damage(path)
    if problem:
      raise damaged_error(path, problem)
    release = RELEASE_FILES.get(path.name)
    if release and path.stat().st_size != release[0]:
      logging.warning('%s is %s bytes, not the %s of the ILSVRC2012 release: a complete tar of '
                      'other contents (a subset?); preparing it as it is.', path,
                      f'{path.stat().st_size:,}', f'{release[0]:,}')


def locate_damage(paths: list[pathlib.Path], error: BaseException) -> UserError:
  """After `error` (one of TAR_ERRORS) stopped the preparation: the error naming the bad tar."""
  for path in paths:
    problem = find_damage(path, nested=True)
    if problem:
      return damaged_error(path, problem)
  # Not found by headers: the damage is inside a member's data, which only TFDS's read saw.
  return UserError(f'preparing ImageNet from {", ".join(map(str, paths))} failed reading a tar '
                   f'({type(error).__name__}: {error}); one of them is damaged: download them '
                   f'again from {DOWNLOAD_URL}.')
