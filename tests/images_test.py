"""alexnet_jax.data.images: real photographs in many file variants, each against a reference.

Every variant is made from an 8-bit RGB photograph of scikit-image's bundled data (chelsea, coffee,
astronaut, rocket) by code here that never calls the decoder under test; its reference rendering is
computed independently (numpy; for plain JPEGs, TensorFlow's decoder as the ImageNet pipeline calls
it, which must agree bit for bit). Where the previous
decoder (Pillow's plain `convert('RGB')`) shows a different picture, the table says so and the test
checks that this wrong answer lies outside the tolerance, so the tolerance tells the two apart.
"""

import dataclasses
import io
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tifffile
from PIL import Image

from alexnet_jax.data import images, preprocessing
from alexnet_jax.errors import UserError

PHOTOS = ('chelsea', 'coffee', 'astronaut', 'rocket')
CROP = (96, 128)  # Small, non-square (so a wrong rotation shows as a wrong shape).


def _photo(index: int) -> np.ndarray:
  """uint8 [96, 128, 3]: the middle of a bundled photograph (real texture, edges and colours)."""
  full = getattr(skimage.data, PHOTOS[index % len(PHOTOS)])()
  y, x = (full.shape[0] - CROP[0]) // 2, (full.shape[1] - CROP[1]) // 2
  return np.ascontiguousarray(full[y:y + CROP[0], x:x + CROP[1], :3])


def _luma(rgb: np.ndarray) -> np.ndarray:
  """ITU-R BT.601 luma, uint8 [H, W]: computed here, not by Pillow."""
  y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  return np.round(y).astype(np.uint8)


def _grey(rgb: np.ndarray) -> np.ndarray:
  return np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


# --- Reference colour maths (sRGB and Adobe RGB (1998), D50 PCS as in ICC profiles) -------------

SRGB_TO_XYZ_D50 = np.array([[0.4361, 0.3851, 0.1431],   # Columns: the Bradford-adapted sRGB
                            [0.2225, 0.7169, 0.0606],   # colorants of sRGB IEC61966-2.1's
                            [0.0139, 0.0971, 0.7141]])  # ICC profile.
ADOBE_TO_XYZ_D50 = np.array([[0.6097, 0.2053, 0.1492],  # Adobe RGB (1998)'s ICC colorants.
                             [0.3111, 0.6257, 0.0632],
                             [0.0195, 0.0609, 0.7446]])
ADOBE_GAMMA = 563 / 256  # Adobe RGB (1998): 2.19921875, stored as u8Fixed8.


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
  v = v / 255.0
  return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_to_adobe(rgb: np.ndarray) -> np.ndarray:
  linear = _srgb_to_linear(rgb.astype(np.float64)) @ SRGB_TO_XYZ_D50.T
  adobe = np.clip(linear @ np.linalg.inv(ADOBE_TO_XYZ_D50).T, 0, 1)
  return np.round(255 * adobe ** (1 / ADOBE_GAMMA)).astype(np.uint8)


def _s15(value: float) -> bytes:
  return struct.pack('>i', round(value * 65536))


def _icc_profile(colour_space: bytes, tags: dict[bytes, bytes]) -> bytes:
  """A minimal ICC v2 display profile (header, tag table, tags), written from the ICC spec."""
  tags = {b'desc': (b'desc' + bytes(4) + struct.pack('>I', 5) + b'test\0' + bytes(4 + 4 + 3 + 67)),
          b'wtpt': b'XYZ ' + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249), **tags}
  table_size = 4 + 12 * len(tags)
  offset, table, body = 128 + table_size, b'', b''
  for signature, data in tags.items():
    data += bytes(-len(data) % 4)
    table += signature + struct.pack('>II', offset + len(body), len(data))
    body += data
  size = 128 + table_size + len(body)
  header = (struct.pack('>I', size) + b'lcms' + struct.pack('>I', 0x02100000) + b'mntr'
            + colour_space + b'XYZ ' + bytes(12) + b'acsp' + bytes(24) + struct.pack('>I', 0)
            + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(4))
  header += bytes(128 - len(header))
  return header + struct.pack('>I', len(tags)) + table + body


def _curve(gamma: float) -> bytes:
  return b'curv' + bytes(4) + struct.pack('>IH', 1, round(gamma * 256))


def _adobe_rgb_profile() -> bytes:
  xyz = lambda column: b'XYZ ' + bytes(4) + b''.join(_s15(v) for v in column)  # noqa: E731
  return _icc_profile(b'RGB ', {
      b'rXYZ': xyz(ADOBE_TO_XYZ_D50[:, 0]), b'gXYZ': xyz(ADOBE_TO_XYZ_D50[:, 1]),
      b'bXYZ': xyz(ADOBE_TO_XYZ_D50[:, 2]), b'rTRC': _curve(ADOBE_GAMMA),
      b'gTRC': _curve(ADOBE_GAMMA), b'bTRC': _curve(ADOBE_GAMMA)})


def _linear_grey_profile() -> bytes:
  return _icc_profile(b'GRAY', {b'kTRC': _curve(1.0)})


# --- Variant makers: photo -> (file bytes, reference rendering [H, W, 3]) ------------------------

Maker = Callable[[np.ndarray], tuple[bytes, np.ndarray]]


def _plain(fmt: str, **kwargs) -> Maker:
  return lambda rgb: (_save(Image.fromarray(rgb), fmt, **kwargs), rgb)


def _pipeline_jpeg(fmt_kwargs: dict, grey: bool = False) -> Maker:
  """A JPEG whose reference is the ImageNet pipeline's TensorFlow decoder on the same bytes."""
  def make(rgb):
    source = Image.fromarray(_luma(rgb)) if grey else Image.fromarray(rgb)
    data = _save(source, 'JPEG', **fmt_kwargs)
    window = tf.constant([0, 0, rgb.shape[0], rgb.shape[1]])
    return data, preprocessing.decode_jpeg_window(data, window).numpy()
  return make


def _grey16(fmt: str, byte_order: str) -> Maker:
  def make(rgb):
    grey = _luma(rgb)
    samples = (grey.astype(np.uint16) * 257).astype(byte_order + 'u2')  # The same picture.
    mode = 'I;16B' if byte_order == '>' else 'I;16'
    wide = Image.frombytes(mode, grey.shape[::-1], samples.tobytes())
    return _save(wide, fmt), _grey(grey)
  return make


def _grey16_ppm(rgb):
  grey = _luma(rgb)
  header = f'P5 {grey.shape[1]} {grey.shape[0]} 65535\n'.encode()
  return header + (grey.astype('>u2') * 257).tobytes(), _grey(grey)


def _int32_tiff(rgb):
  grey = _luma(rgb)
  return _save(Image.fromarray(grey.astype(np.int32) * 257), 'TIFF'), _grey(grey)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _rgb16_png(rgb):
  """A 16-bit RGB PNG written by hand from the PNG spec (Pillow cannot write one)."""
  samples = rgb.astype('>u2') * 257
  rows = b''.join(b'\0' + row.tobytes() for row in samples)
  ihdr = struct.pack('>IIBBBBB', rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
  data = (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr)
          + _png_chunk(b'IDAT', zlib.compress(rows)) + _png_chunk(b'IEND', b''))
  return data, rgb


def _rgb16_tiff(rgb):
  buffer = io.BytesIO()
  tifffile.imwrite(buffer, rgb.astype(np.uint16) * 257, photometric='rgb')
  return buffer.getvalue(), rgb


def _min_is_white_tiff(bits: int) -> Maker:
  """Greyscale TIFF stored inverted (PhotometricInterpretation 0: 0 is white)."""
  def make(rgb):
    grey = _luma(rgb)
    samples = (255 - grey).astype(np.uint8) if bits == 8 else (
        (255 - grey).astype(np.uint16) * 257)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, photometric='miniswhite')
    return buffer.getvalue(), _grey(grey)
  return make


def _float_tiff(rgb):
  grey = _luma(rgb)
  return _save(Image.fromarray(grey.astype(np.float32) / 255), 'TIFF'), _grey(grey)


def _one_bit(rgb):
  black_white = _luma(rgb) >= 128
  return (_save(Image.fromarray(black_white), 'PNG'),
          _grey(np.where(black_white, 255, 0).astype(np.uint8)))


def _quantized(rgb, colours=64) -> tuple[np.ndarray, np.ndarray]:
  """(indices [H, W], palette [colours, 3]) by a k-means-free, seeded nearest-colour choice."""
  rng = np.random.default_rng(0)
  palette = rgb.reshape(-1, 3)[rng.choice(rgb.shape[0] * rgb.shape[1], colours, replace=False)]
  distances = ((rgb[:, :, None, :].astype(np.int32) - palette[None, None].astype(np.int32)) ** 2)
  return distances.sum(-1).argmin(-1).astype(np.uint8), palette


def _palette_image(indices, palette) -> Image.Image:
  image = Image.fromarray(indices, mode='P')
  image.putpalette(palette.astype(np.uint8).tobytes())
  return image


def _over_white(colour: np.ndarray, alpha_uint8: np.ndarray) -> np.ndarray:
  alpha = alpha_uint8.astype(np.float64)[..., None] / 255
  return np.round(colour * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _palette_png(rgb):
  indices, palette = _quantized(rgb)
  return _save(_palette_image(indices, palette), 'PNG'), palette[indices]


def _palette_png_trns(rgb):
  indices, palette = _quantized(rgb)
  index_alpha = (np.arange(len(palette)) * 37 % 256).astype(np.uint8)  # Varied opacities.
  data = _save(_palette_image(indices, palette), 'PNG', transparency=index_alpha.tobytes())
  return data, _over_white(palette[indices], index_alpha[indices])


def _gif_transparent(rgb):
  indices, palette = _quantized(rgb)
  data = _save(_palette_image(indices, palette), 'GIF', transparency=5)
  reference = palette[indices].copy()
  reference[indices == 5] = 255
  return data, reference


def _frames(fmt: str) -> Maker:
  def make(rgb):
    first, second = Image.fromarray(rgb), Image.fromarray(255 - rgb[::-1])
    return _save(first, fmt, save_all=True, append_images=[second]), rgb
  return make


def _gif_frames(rgb):
  indices, palette = _quantized(rgb)
  first = _palette_image(indices, palette)
  second = _palette_image(indices[::-1].copy(), palette)
  return _save(first, 'GIF', save_all=True, append_images=[second]), palette[indices]


def _alpha_ramp(shape) -> np.ndarray:
  """uint8 [H, W]: opaque on the left, transparent on the right, with a fully transparent band."""
  ramp = np.linspace(255, 0, shape[1]).round().astype(np.uint8)
  alpha = np.tile(ramp, (shape[0], 1))
  alpha[:10] = 0
  return alpha


def _rgba(fmt: str, **kwargs) -> Maker:
  def make(rgb):
    alpha = _alpha_ramp(rgb.shape)
    return _save(Image.fromarray(np.dstack([rgb, alpha])), fmt, **kwargs), _over_white(rgb, alpha)
  return make


def _la_png(rgb):
  grey, alpha = _luma(rgb), _alpha_ramp(rgb.shape)
  data = _save(Image.fromarray(np.dstack([grey, alpha]), mode='LA'), 'PNG')
  return data, _grey(_over_white(grey[..., None], alpha)[..., 0])


def _pa_tiff(rgb):
  indices, palette = _quantized(rgb)
  alpha = _alpha_ramp(rgb.shape)
  image = _palette_image(indices, palette).convert('PA')
  image.putalpha(Image.fromarray(alpha))
  return _save(image, 'TIFF'), _over_white(palette[indices], alpha)


def _grey_colour_key(rgb):
  grey = _luma(rgb)
  key = int(np.bincount(grey.ravel()).argmax())  # The most frequent grey becomes transparent.
  reference = np.where(grey == key, 255, grey).astype(np.uint8)
  return _save(Image.fromarray(grey), 'PNG', transparency=key), _grey(reference)


def _cmyk_of(rgb) -> np.ndarray:
  """Full grey-component replacement, so that (255 - C)(255 - K)/255 gives back R exactly."""
  m = rgb.max(axis=-1, keepdims=True).astype(np.float64)
  cmy = np.where(m > 0, 255 * (m - rgb) / np.maximum(m, 1), 0)
  return np.round(np.concatenate([cmy, 255 - m], axis=-1)).astype(np.uint8)


def _cmyk(fmt: str, **kwargs) -> Maker:
  return lambda rgb: (_save(Image.fromarray(_cmyk_of(rgb), mode='CMYK'), fmt, **kwargs), rgb)


def _ycbcr_tiff(rgb):
  # JFIF full-range BT.601, computed here.
  r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
  y = 0.299 * r + 0.587 * g + 0.114 * b
  cb, cr = 128 + (b - y) / 1.772, 128 + (r - y) / 1.402
  ycc = np.clip(np.round(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)
  return _save(Image.fromarray(ycc, mode='YCbCr'), 'TIFF'), rgb


def _lab_tiff(rgb):
  linear = _srgb_to_linear(rgb.astype(np.float64)) @ SRGB_TO_XYZ_D50.T
  f = lambda t: np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)  # noqa
  fx, fy, fz = (f(linear[..., i] / w) for i, w in enumerate((0.9642, 1.0, 0.8249)))
  lab = np.stack([(116 * fy - 16) * 255 / 100, 500 * (fx - fy), 200 * (fy - fz)], -1)
  lab = np.clip(np.round(lab), [0, -128, -128], [255, 127, 127]).astype(np.int16)
  # TIFF CIELab (and Pillow's LAB mode): L* scaled to 0..255, a* and b* as signed bytes.
  image = Image.fromarray(lab.astype(np.uint8), mode='LAB')  # Two's complement a*, b*.
  return _save(image, 'TIFF'), rgb


# Orientation value -> the stored pixels of an upright picture, from the EXIF 2.3 wording of tag
# 0x0112 ("the 0th row is the visual ..., the 0th column is the visual ..."); np.rot90(a, 1) turns
# anticlockwise.
STORED_FOR_ORIENTATION = {
    1: lambda a: a,                                    # top, left
    2: lambda a: a[:, ::-1],                           # top, right
    3: lambda a: a[::-1, ::-1],                        # bottom, right
    4: lambda a: a[::-1],                              # bottom, left
    5: lambda a: np.swapaxes(a, 0, 1),                 # left, top
    6: lambda a: np.rot90(a, 1),                       # right, top
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],     # right, bottom
    8: lambda a: np.rot90(a, -1),                      # left, bottom
}


def _exif(orientation: int, fmt: str = 'JPEG', **kwargs) -> Maker:
  def make(rgb):
    stored = Image.fromarray(np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](rgb)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, fmt, exif=exif.tobytes(), **kwargs), rgb
  return make


def _adobe_rgb(fmt: str, **kwargs) -> Maker:
  def make(rgb):
    image = Image.fromarray(_srgb_to_adobe(rgb))
    return _save(image, fmt, icc_profile=_adobe_rgb_profile(), **kwargs), rgb
  return make


def _linear_grey_icc(rgb):
  grey = _luma(rgb)
  linear = np.round(255 * _srgb_to_linear(grey.astype(np.float64))).astype(np.uint8)
  return _save(Image.fromarray(linear), 'PNG', icc_profile=_linear_grey_profile()), _grey(grey)


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  make: Maker
  mean_tolerance: float  # Mean absolute difference from the reference, in 8-bit levels.
  max_tolerance: int     # Largest single difference.
  old_decoder_wrong: bool  # Pillow's plain convert('RGB') shows another picture.


JPEG_LOSS = dict(mean_tolerance=3.0, max_tolerance=80)  # JPEG vs the photo it was made from.
VARIANTS = (
    Variant('png_rgb8', _plain('PNG'), 0, 0, False),
    Variant('bmp_rgb8', _plain('BMP'), 0, 0, False),
    Variant('webp_lossless_rgb', _plain('WEBP', lossless=True), 0, 0, False),
    Variant('jpeg_baseline', _pipeline_jpeg(dict(quality=90)), 0, 0, False),
    Variant('jpeg_progressive', _pipeline_jpeg(dict(quality=90, progressive=True)), 0, 0,
            False),
    Variant('jpeg_444', _pipeline_jpeg(dict(quality=95, subsampling=0)), 0, 0, False),
    Variant('jpeg_greyscale', _pipeline_jpeg(dict(quality=90), grey=True), 0, 0, False),
    Variant('png_grey16_I;16', _grey16('PNG', '<'), 0, 0, True),
    Variant('tiff_grey16_I;16B', _grey16('TIFF', '>'), 0, 0, True),
    Variant('pgm_grey16_I', _grey16_ppm, 0, 0, True),
    Variant('tiff_int32_I', _int32_tiff, 0, 0, True),
    Variant('png_rgb16', _rgb16_png, 0, 0, False),
    Variant('tiff_rgb16', _rgb16_tiff, 0, 0, False),
    Variant('tiff_float_F', _float_tiff, 0, 0, True),
    Variant('png_1bit', _one_bit, 0, 0, False),
    Variant('png_palette', _palette_png, 0, 0, False),
    Variant('png_palette_trns', _palette_png_trns, 0, 0, True),
    Variant('gif_transparent_index', _gif_transparent, 0, 0, True),
    Variant('gif_two_frames', _gif_frames, 0, 0, False),
    Variant('apng_two_frames', _frames('PNG'), 0, 0, False),
    Variant('tiff_two_pages', _frames('TIFF'), 0, 0, False),
    Variant('png_rgba', _rgba('PNG'), 0, 0, True),
    Variant('webp_lossless_rgba', _rgba('WEBP', lossless=True, exact=True), 0, 0, True),
    Variant('tiff_rgba', _rgba('TIFF'), 0, 0, True),
    Variant('png_la', _la_png, 0, 0, True),
    Variant('tiff_pa', _pa_tiff, 0, 0, True),
    Variant('png_grey_colour_key', _grey_colour_key, 0, 0, True),
    Variant('tiff_cmyk', _cmyk('TIFF'), 0.5, 1, False),
    Variant('jpeg_cmyk_adobe', _cmyk('JPEG', quality=95), **JPEG_LOSS, old_decoder_wrong=False),
    Variant('tiff_ycbcr', _ycbcr_tiff, 0.7, 2, False),
    Variant('tiff_cielab', _lab_tiff, 0.7, 6, False),
    *(Variant(f'jpeg_exif_orientation_{o}', _exif(o, quality=95), **JPEG_LOSS,
              old_decoder_wrong=o != 1) for o in range(1, 9)),
    Variant('png_exif_orientation_6', _exif(6, 'PNG'), 0, 0, True),
    # Pillow's TIFF reader turns TIFF pages itself: the old decoder was right here.
    Variant('tiff_exif_orientation_8', _exif(8, 'TIFF'), 0, 0, False),
    Variant('png_icc_adobe_rgb', _adobe_rgb('PNG'), 0.8, 3, True),
    Variant('jpeg_icc_adobe_rgb', _adobe_rgb('JPEG', quality=95), **JPEG_LOSS,
            old_decoder_wrong=True),
    # 8-bit linear samples are coarse in the dark: one step near black is ~13 sRGB levels.
    Variant('png_grey_icc_linear', _linear_grey_icc, 1.0, 16, True),
    Variant('tiff_grey8_min_is_white', _min_is_white_tiff(8), 0, 0, False),
    Variant('tiff_grey16_min_is_white', _min_is_white_tiff(16), 0, 0, True),
)


def _differences(got: np.ndarray, want: np.ndarray) -> tuple[float, int]:
  if got.shape != want.shape:
    return np.inf, np.iinfo(np.int32).max
  diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
  return float(diff.mean()), int(diff.max())


def _old_decoder(data: bytes) -> np.ndarray:
  """The decoder predict had: Pillow's convert, which drops alpha and clips 16-bit samples."""
  with Image.open(io.BytesIO(data)) as image, warnings.catch_warnings():
    warnings.simplefilter('ignore')  # Pillow warns that it drops a palette's transparency.
    return np.asarray(image.convert('RGB'))


@pytest.mark.parametrize('variant', VARIANTS, ids=lambda v: v.name)
def test_variant_decodes_to_its_reference_rendering(variant):
  rgb = _photo(VARIANTS.index(variant))
  data, reference = variant.make(rgb)

  got = images.decode_image(data, channels=3)

  assert got.dtype == np.uint8
  mean, largest = _differences(got, reference)
  assert mean <= variant.mean_tolerance and largest <= variant.max_tolerance, (mean, largest)
  if variant.old_decoder_wrong:  # The tolerance separates this right answer from the old one.
    old_mean, old_largest = _differences(_old_decoder(data), reference)
    assert old_mean > variant.mean_tolerance or old_largest > variant.max_tolerance + 8, (
        old_mean, old_largest)


def test_the_16_bit_grey_png_is_the_8_bit_picture_not_two_levels(tmp_path):
  grey = _luma(_photo(0))
  Image.fromarray(grey).save(tmp_path / 'eight.png')
  Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / 'sixteen.png')
  assert Image.open(tmp_path / 'sixteen.png').mode == 'I;16'

  eight = images.decode_image(tmp_path / 'eight.png', 1)
  sixteen = images.decode_image(str(tmp_path / 'sixteen.png'), 1)

  np.testing.assert_array_equal(sixteen, eight)
  assert len(np.unique(sixteen)) > 100
  # The old decode: Pillow clips I;16 to 8 bits, leaving 0 and 255 only.
  assert set(np.unique(_old_decoder((tmp_path / 'sixteen.png').read_bytes()))) <= {0, 255}


def test_16_bit_samples_round_to_the_nearest_8_bit_level():
  values = np.array([[0, 128, 129, 257, 385, 386, 65535]], np.uint16)  # 385 = 1.498 * 257.
  data = _save(Image.fromarray(values), 'PNG')
  np.testing.assert_array_equal(images.decode_image(data, 1)[0, :, 0], [0, 0, 1, 1, 1, 2, 255])


def test_colour_to_grey_is_bt601_luma_and_grey_to_colour_replicates():
  rgb = _photo(1)
  grey = images.decode_image(_save(Image.fromarray(rgb), 'PNG'), 1)
  assert grey.shape == rgb.shape[:2] + (1,)
  assert np.abs(grey[..., 0].astype(int) - _luma(rgb)).max() <= 1
  colour = images.decode_image(_save(Image.fromarray(_luma(rgb)), 'PNG'), 3)
  np.testing.assert_array_equal(colour, _grey(_luma(rgb)))


def test_transparent_grey_stays_one_channel_over_white():
  data, reference = _la_png(_photo(2))
  np.testing.assert_array_equal(images.decode_image(data, 1), reference[..., :1])


def test_a_path_and_its_bytes_decode_alike(tmp_path):
  data, _ = _exif(6, quality=90)(_photo(3))
  (tmp_path / 'photo.jpg').write_bytes(data)
  np.testing.assert_array_equal(images.decode_image(tmp_path / 'photo.jpg', 3),
                                images.decode_image(data, 3))


def _write(tmp_path, name: str, data: bytes) -> str:
  (tmp_path / name).write_bytes(data)
  return str(tmp_path / name)


def _float_tiff_of(values) -> bytes:
  return _save(Image.fromarray(np.asarray(values, np.float32)), 'TIFF')


DAMAGED = (
    ('missing', lambda tmp: str(tmp / 'nothing.png'), r'^no such file$'),
    ('directory', lambda tmp: str(tmp), r'is a directory'),
    ('empty', lambda tmp: _write(tmp, 'empty.png', b''), r'not an image file'),
    ('text', lambda tmp: _write(tmp, 'notes.jpg', b'just some text\n' * 20), r'not an image'),
    ('random_bytes', lambda tmp: _write(tmp, 'noise.png', np.random.default_rng(0).bytes(4000)),
     r'not an image file'),
    ('truncated_png', lambda tmp: _write(tmp, 'cut.png', _plain('PNG')(_photo(0))[0][:3000]),
     r'truncated or damaged'),
    ('truncated_jpeg', lambda tmp: _write(
        tmp, 'cut.jpg', _plain('JPEG', quality=90)(_photo(1))[0][:2500]), r'truncated or damaged'),
    ('float_0_to_255', lambda tmp: _write(tmp, 'f.tif', _float_tiff_of([[0.0, 128.0, 255.0]])),
     r'floating-point pixels from 0 to 255: only 0 \(black\) to 1 \(white\)'),
    ('float_nan', lambda tmp: _write(tmp, 'nan.tif', _float_tiff_of([[0.0, np.nan]])),
     r'floating-point pixels'),
    ('int32_negative', lambda tmp: _write(
        tmp, 'i.tif', _save(Image.fromarray(np.array([[-5, 70000]], np.int32)), 'TIFF')),
     r'32-bit integer pixels from -5 to 70000'),
    ('decompression_bomb', lambda tmp: _write(tmp, 'huge.png', b'\x89PNG\r\n\x1a\n' + _png_chunk(
        b'IHDR', struct.pack('>IIBBBBB', 20000, 20000, 8, 0, 0, 0, 0)) + _png_chunk(
            b'IDAT', zlib.compress(b'')) + _png_chunk(b'IEND', b'')),
     r'Image size \(400000000 pixels\) exceeds limit .*; resize it first'),
    ('float_rgb_tiff', lambda tmp: (tifffile.imwrite(tmp / 'f3.tif', np.zeros((4, 4, 3),
                                                                             np.float32)),
                                    str(tmp / 'f3.tif'))[1], r'not an image file'),
)


@pytest.mark.parametrize('name,make,message', DAMAGED, ids=[d[0] for d in DAMAGED])
def test_what_cannot_be_shown_faithfully_is_one_user_error(tmp_path, name, make, message):
  del name
  with pytest.raises(UserError, match=message) as e:
    images.decode_image(make(tmp_path), 3)
  assert '\n' not in str(e.value)
