"""Image files decoded as an image viewer shows them: the one decoder for every image a user gives.

`decode_image(path_or_bytes, channels)` returns uint8 [H, W, channels] in sRGB, whatever the file
holds. What changes the picture a person sees is honoured:

- EXIF orientation (all 8 values): the pixels are turned the way a viewer turns them.
- TIFF's MinIsWhite greyscale (0 is white) at every bit depth.
- Bit depth: 16-bit samples (Pillow modes I;16, I;16B, I;16L, I) are scaled by 255/65535, i.e.
  round(v / 257), so 257 * k is exactly k; 32-bit float samples (mode F) are taken as 0 black
  to 1 white (the float-image convention of TIFF readers and image libraries) and scaled by 255;
  1-bit pixels are 0 or 255.
- Colour: palettes are looked up; CMYK is converted through its embedded ICC profile or, without
  one, with Pillow's naive 255 - C - K formula (Pillow reads every CMYK JPEG as Adobe-inverted, as
  libjpeg-turbo-based viewers do); YCbCr and CIELab through their standard definitions; an
  embedded ICC profile (iCCP, APP2, TIFF tag) is converted to sRGB with LittleCMS (Pillow's
  ImageCms, perceptual intent, as browsers do). A profile LittleCMS cannot parse, or one of the
  wrong colour space for the pixels, is ignored, as browsers ignore it.
- Transparency (alpha channels, palette and colour-key tRNS): composited onto white. A
  transparent image is shown on a web page, in a document or on paper, all white by default
  (ImageMagick's `-flatten` and browsers' default page background are white too); black would
  turn every transparent product photo into a dark silhouette.
- Several frames (GIF, TIFF pages, animated PNG): the first frame, what a still viewer shows.
- Greyscale <-> colour: grey is replicated to R = G = B; colour to grey is ITU-R BT.601 luma
  (0.299 R + 0.587 G + 0.114 B, Pillow's 'L').

What has no single standard rendering raises `UserError` with the reason (a float image outside
[0, 1], 32-bit integers beyond 16 bits, an unsupported mode); so does a missing, truncated or
damaged file. A picture never silently changes.

The ImageNet pipeline does not call this: TensorFlow decodes its JPEGs inside the tf.data graph
(alexnet_jax/data/preprocessing.py). For the JPEGs ILSVRC-2012 holds both give the same pixels
(tests/images_test.py compares them): libjpeg-turbo decodes baseline, progressive and greyscale
JPEGs alike in both, greyscale is replicated to RGB in both, and TFDS rewrites the training set's
22 CMYK JPEGs and its one PNG as RGB JPEGs when it prepares the data. EXIF orientation and ICC
profiles are not applied there, on purpose: ImageNet's labels, its mean image and the published
AlexNet results were computed on the pixels as stored, by decoders that ignored both.
"""

import io
import os

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from alexnet_jax.errors import UserError

BACKGROUND = 255  # White: what transparency is composited onto (see the module docstring).
# Float samples within this much of [0, 1] are rounding noise of a [0, 1] image, not another scale.
FLOAT_SLACK = 1e-3
_SRGB = ImageCms.createProfile('sRGB')
_ICC_SPACES = {'RGB': 'RGB ', 'L': 'GRAY', 'CMYK': 'CMYK', 'LAB': 'Lab '}  # Pillow mode -> ICC.


def decode_image(source: str | os.PathLike | bytes, channels: int) -> np.ndarray:
  """uint8 [H, W, channels] (channels 1: grey, 3: RGB) as a viewer shows the file.

  `source` is a path or the file's bytes. Raises UserError (no file name in the message: the
  caller knows which file it gave) for a missing, unreadable or damaged file or a picture without
  a standard rendering.
  """
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, not {channels}')
  with open_image(source) as image:
    pixels = render(image)
  if channels == 1 and pixels.shape[-1] == 3:
    return np.asarray(Image.fromarray(pixels).convert('L'))[..., None]  # BT.601 luma.
  if channels == 3 and pixels.shape[-1] == 1:
    return np.repeat(pixels, 3, axis=-1)
  return pixels


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
  """The file's first frame, fully decoded; every failure to read it is a UserError."""
  try:
    image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
  except FileNotFoundError as e:
    raise UserError('no such file') from e
  except IsADirectoryError as e:
    raise UserError('is a directory, not an image file') from e
  except PermissionError as e:
    raise UserError('permission denied') from e
  except UnidentifiedImageError as e:
    raise UserError('not an image file Pillow can read (an unknown format, or a damaged '
                    'header)') from e
  except Image.DecompressionBombError as e:  # Over twice Pillow's MAX_IMAGE_PIXELS.
    raise UserError(f'{e}; resize it first') from e
  except OSError as e:
    raise UserError(f'cannot read the file ({e.strerror or e})') from e
  try:
    image.seek(0)
    image.load()
  except Exception as e:  # pylint: disable=broad-except  # Damage shows as many error types.
    image.close()
    raise UserError(f'the image data is truncated or damaged ({type(e).__name__}: {e}); '
                    'get the file again') from e
  return image


TIFF_PHOTOMETRIC = 262  # The TIFF tag PhotometricInterpretation (TIFF 6.0, section 3).


def render(image: Image.Image) -> np.ndarray:
  """uint8 [H, W, 1] (greyscale sources) or [H, W, 3]: sRGB pixels over a white background."""
  icc = image.info.get('icc_profile')
  # TIFF PhotometricInterpretation 0 (MinIsWhite): Pillow inverts 1- and 8-bit samples itself,
  # not wider ones.
  inverted = (getattr(image, 'tag_v2', {}).get(TIFF_PHOTOMETRIC) == 0
              and image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'))
  image = _apply_orientation(image)
  colour, alpha = _split_alpha(image)
  colour = _to_8_bits(colour)
  colour = _to_srgb(ImageOps.invert(colour) if inverted else colour, icc)
  pixels = np.asarray(colour)
  pixels = pixels.reshape(pixels.shape[:2] + (-1,))
  if alpha is not None:
    blended = pixels * alpha[..., None] + BACKGROUND * (1.0 - alpha[..., None])
    pixels = np.round(blended).astype(np.uint8)
  return pixels


def _apply_orientation(image: Image.Image) -> Image.Image:
  try:
    return ImageOps.exif_transpose(image)
  except Exception:  # pylint: disable=broad-except  # Unparseable EXIF: viewers ignore it too.
    return image


def _split_alpha(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
  """(the colour channels, opacity float [H, W] in [0, 1] or None when fully opaque)."""
  mode = image.mode
  key = image.info.get('transparency')
  if mode == 'P':
    image = image.convert('RGBA') if key is not None else image.convert('RGB')
  elif mode == 'PA':
    image = image.convert('RGBA')
  elif mode in ('La', 'RGBa'):  # Premultiplied: Pillow divides the alpha back out.
    image = image.convert(mode.upper())
  elif key is not None and mode in ('L', 'RGB', 'I;16', 'I;16B', 'I;16L', 'I'):
    # A colour key (PNG tRNS): pixels of exactly this value are fully transparent.
    values = np.asarray(image)
    same = values == np.asarray(key) if values.ndim == 2 else np.all(values == key, axis=-1)
    return image, np.where(same, 0.0, 1.0)
  if image.mode in ('RGBA', 'LA'):
    alpha = np.asarray(image.getchannel('A'), np.float64) / 255.0
    return image.convert(image.mode[:-1]), (alpha if alpha.min() < 1.0 else None)
  return image, None


def _to_8_bits(image: Image.Image) -> Image.Image:
  """8-bit samples of the same picture: modes '1', 'I;16*', 'I' and 'F' become 'L'."""
  mode = image.mode
  if mode == '1':
    return image.convert('L')
  if mode.startswith('I;16') or mode == 'I':
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise UserError(f'32-bit integer pixels from {values.min()} to {values.max()}: only 0 to '
                      '65535 (16 bits) has a standard display; save the image as 8 or 16 bits')
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # round(v / 257).
  if mode == 'F':
    values = np.asarray(image, np.float64)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if not np.isfinite(values).all() or low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:
      raise UserError(f'floating-point pixels from {low:g} to {high:g}: only 0 (black) to 1 '
                      '(white) has a standard display; rescale it or save it as 8 or 16 bits')
    return Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
  return image


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
  """'L' or 'RGB' in sRGB, through the embedded ICC profile when it applies."""
  if image.mode == 'RGBX':
    image = image.convert('RGB')
  elif image.mode == 'YCbCr':
    image = image.convert('RGB')  # JFIF's full-range BT.601 definition.
  profile = _usable_profile(icc, image.mode)
  if profile is not None:
    return ImageCms.profileToProfile(image, profile, _SRGB, outputMode='RGB')
  if image.mode == 'LAB':
    return ImageCms.profileToProfile(image, ImageCms.createProfile('LAB'), _SRGB,
                                     outputMode='RGB')
  if image.mode == 'CMYK':
    return image.convert('RGB')
  if image.mode not in ('L', 'RGB'):
    raise UserError(f'the colour mode {image.mode} has no conversion to RGB here; save the image '
                    'as RGB or greyscale')
  return image


def _usable_profile(icc: bytes | None, mode: str) -> ImageCms.ImageCmsProfile | None:
  if not icc or mode not in _ICC_SPACES:
    return None
  try:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
  except (ImageCms.PyCMSError, OSError, ValueError):
    return None
  return profile if profile.profile.xcolor_space == _ICC_SPACES[mode] else None
