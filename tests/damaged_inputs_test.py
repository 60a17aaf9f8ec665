"""Every input file the project reads, damaged: one UserError line naming it, never a traceback.

The readers: the ILSVRC-2012 tars (and their class archives), the prepared TFDS data (records and
metadata) and the cached ImageNet mean, the Debian Fashion-MNIST files, checkpoints read for
inference (predict, features, figures, ensemble, fine-tuning) and for reports (conformance), a
workdir's config.json, convert's weight files, metrics.jsonl and a sweep's run markers. Images
given to predict: tests/images_test.py (DAMAGED). Config files: tests/cli_test.py.
Each damage is what happens in practice: random bytes, a download cut short, a flipped bit.
"""

import dataclasses
import hashlib
import glob
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import checkpoint, convert, metrics, trained_model
from alexnet_jax.data import (create_dataset, fake_ilsvrc, fashion_mnist, ilsvrc_tars, imagenet,
                              prepared)
from alexnet_jax.errors import UserError
from experiments import report, sweep
from tests.reliability_test import flip_bits, garble_json, truncate
from tests.trained_helpers import shared_tiny_workdir

ROOT = pathlib.Path(__file__).parent.parent


def _one_line(error: pytest.ExceptionInfo) -> str:
  text = str(error.value)
  assert '\n' not in text and text, text
  return text


def _files(directory: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory`: what "untouched" is checked on."""
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob('*')) if p.is_file()}


# --- The ILSVRC-2012 tars ------------------------------------------------------------------------

def _random_bytes(path: pathlib.Path) -> None:
  path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _cut_at(fraction: float) -> Callable[[pathlib.Path], None]:
  def cut(path):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
  return cut


def _cut_after_a_member(path: pathlib.Path) -> None:
  """Cut exactly after the 3rd member's data: every header parses, the end-of-archive is gone."""
  with tarfile.open(path) as tar:
    member = tar.getmembers()[2]
  end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
  path.write_bytes(path.read_bytes()[:end])


def _overwrite_a_header(path: pathlib.Path) -> None:
  """Random bytes over the 3rd member's header: tarfile would stop there and report nothing."""
  with tarfile.open(path) as tar:
    offset = tar.getmembers()[2].offset
  data = bytearray(path.read_bytes())
  data[offset:offset + tarfile.BLOCKSIZE] = np.random.default_rng(1).bytes(tarfile.BLOCKSIZE)
  path.write_bytes(bytes(data))


def _empty(path: pathlib.Path) -> None:
  path.write_bytes(b'')


def _damage_a_class_archive(path: pathlib.Path) -> None:
  """The training tar stays a valid tar; its first class archive's bytes become random."""
  with tarfile.open(path) as tar:
    members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
  with tarfile.open(path, 'w') as tar:
    for i, (member, data) in enumerate(members):
      if i == 0:
        data = np.random.default_rng(2).bytes(len(data))
      tar.addfile(member, io.BytesIO(data))


@dataclasses.dataclass(frozen=True)
class TarDamage:
  name: str
  tar: str
  damage: Callable[[pathlib.Path], None]
  problem: str  # Regex of what the message says is wrong.


TAR_DAMAGES = (
    TarDamage('train_random_bytes', fake_ilsvrc.TRAIN_TAR, _random_bytes,
              r'\(not a complete tar archive: invalid header\)'),
    TarDamage('val_random_bytes', fake_ilsvrc.VAL_TAR, _random_bytes,
              r'\(not a complete tar archive: '),
    TarDamage('train_download_cut_short', fake_ilsvrc.TRAIN_TAR, _cut_at(0.6),
              r'\(not a complete tar archive: unexpected end of data\)'),
    TarDamage('val_download_cut_short', fake_ilsvrc.VAL_TAR, _cut_at(0.5),
              r'\(not a complete tar archive: unexpected end of data\)'),
    TarDamage('val_cut_after_a_member', fake_ilsvrc.VAL_TAR, _cut_after_a_member,
              r'\(it ends at byte [\d,]+, after 3 members\)'),
    TarDamage('val_header_overwritten', fake_ilsvrc.VAL_TAR, _overwrite_a_header,
              r'\(a damaged header at byte [\d,]+, after 2 members\)'),
    TarDamage('val_empty', fake_ilsvrc.VAL_TAR, _empty,
              r'\(not a complete tar archive: empty file\)'),
    # Found only while TFDS reads the class archives; the deep header scan then names it.
    TarDamage('train_class_archive_random_bytes', fake_ilsvrc.TRAIN_TAR, _damage_a_class_archive,
              r'\(class archive n\d+\.tar: not a complete tar archive: '),
)


@pytest.mark.parametrize('case', TAR_DAMAGES, ids=lambda c: c.name)
def test_a_damaged_ilsvrc_tar_is_one_line_naming_it_and_nothing_is_prepared(tmp_path, case):
  manual, data_dir = tmp_path / 'manual', tmp_path / 'data'
  fake_ilsvrc.write_fake_ilsvrc(manual, num_val=8, train_per_class=2)
  (data_dir / 'other_dataset').mkdir(parents=True)
  (data_dir / 'other_dataset' / 'records').write_bytes(b'prepared before')
  before = _files(data_dir)
  case.damage(manual / case.tar)

  with pytest.raises(UserError) as e:
    imagenet.prepare_builder(str(data_dir), str(manual))

  message = _one_line(e)
  assert message.startswith(f'{manual / case.tar} is damaged (')
  assert re.search(case.problem, message), message
  assert 'Download it again from https://image-net.org/download-images' in message
  size, sha256 = ilsvrc_tars.RELEASE_FILES[case.tar]
  assert f'release file is {size:,} bytes' in message and sha256 in message
  assert _files(data_dir) == before  # Nothing prepared, nothing else touched.
  assert not tfds.builder('imagenet2012', data_dir=str(data_dir)).is_prepared()


def test_intact_tars_pass_the_header_checks_and_a_size_unlike_the_release_is_logged(
    tmp_path, caplog):
  fake_ilsvrc.write_fake_ilsvrc(tmp_path, num_val=8, train_per_class=2)
  tars = [tmp_path / fake_ilsvrc.TRAIN_TAR, tmp_path / fake_ilsvrc.VAL_TAR]
  assert [ilsvrc_tars.find_damage(t, nested=True) for t in tars] == [None, None]
  with caplog.at_level('WARNING'):
    ilsvrc_tars.check_tars(tars)
  assert 'not the 6,744,924,160 of the ILSVRC2012 release' in caplog.text


def test_the_release_sizes_and_checksums_are_tfds_registered_ones():
  registered = tfds.core.tfds_path('datasets/imagenet2012/checksums.tsv').read_text().split('\n')
  rows = {line.split()[0].rsplit('/', 1)[1]: (int(line.split()[1]), line.split()[2])
          for line in registered if line.strip()}
  assert rows == ilsvrc_tars.RELEASE_FILES


@pytest.mark.slow
def test_run_py_with_random_byte_tars_prints_one_error_line_and_exits_2(tmp_path):
  manual, data_dir, workdir = tmp_path / 'manual', tmp_path / 'data', tmp_path / 'workdir'
  manual.mkdir()
  for tar in (fake_ilsvrc.TRAIN_TAR, fake_ilsvrc.VAL_TAR):
    (manual / tar).write_bytes(np.random.default_rng(0).bytes(100_000))
  (workdir / 'checkpoints' / '4').mkdir(parents=True)  # An earlier run's checkpoint (stand-in).
  (workdir / 'checkpoints' / '4' / 'state').write_bytes(b'params')
  (data_dir / 'fashion_mnist').mkdir(parents=True)
  (data_dir / 'fashion_mnist' / 'records').write_bytes(b'prepared before')
  before = _files(workdir), _files(data_dir)

  result = subprocess.run(
      [sys.executable, 'run.py', '--config=configs/imagenet.py', f'--workdir={workdir}',
       f'--config.manual_dir={manual}', f'--config.data_dir={data_dir}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert errors[0].startswith(f'error: {manual / fake_ilsvrc.TRAIN_TAR} is damaged (not a '
                              'complete tar archive: invalid header). Download it again')
  assert (_files(workdir), _files(data_dir)) == before


# --- Prepared data and the cached mean ------------------------------------------------------------

@pytest.fixture(scope='module')
def prepared_imagenet(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp('prepared')
  fake_ilsvrc.write_fake_ilsvrc(root / 'manual', num_val=8, train_per_class=2)
  imagenet.prepare_builder(str(root / 'data'), str(root / 'manual'))
  return root


def _imagenet_config(data_dir: pathlib.Path):
  from configs import imagenet as imagenet_config  # pylint: disable=import-outside-toplevel
  config = imagenet_config.get_config()
  config.data_dir = str(data_dir)
  config.batch_size, config.eval_batch_size = 8, 4
  config.input.update(resize_size=24, image_size=19, mean_num_images=8, shuffle_buffer=16)
  return config


def _copy_prepared(root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  shutil.copytree(root / 'data' / 'imagenet2012', tmp_path / 'data' / 'imagenet2012')
  return tmp_path / 'data'


def _flip_middle_byte(path: pathlib.Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


PREPARED_DAMAGES = (
    ('train_record_flipped_bit', 'imagenet2012-train.tfrecord-*', _flip_middle_byte,
     r'the prepared data in \S+/imagenet2012/5\.1\.0 is damaged \(corrupted record at \d+\); '
     r'delete that directory'),
    ('train_record_cut_short', 'imagenet2012-train.tfrecord-*', _cut_at(0.5),
     r'the prepared data in \S+/imagenet2012/5\.1\.0 is damaged \(truncated record at \d+'),
    ('dataset_info_garbled', 'dataset_info.json', lambda p: p.write_text('{"name": "imag'),
     r'the prepared imagenet2012 in \S+/imagenet2012 is damaged \(Failed to load JSON: '),
)


@pytest.mark.parametrize('name,pattern,damage,message', PREPARED_DAMAGES,
                         ids=[d[0] for d in PREPARED_DAMAGES])
def test_damaged_prepared_data_is_one_line_saying_to_prepare_again(
    prepared_imagenet, tmp_path, name, pattern, damage, message):
  del name
  data_dir = _copy_prepared(prepared_imagenet, tmp_path)
  for cache in data_dir.rglob('alexnet_jax_mean_*'):
    cache.unlink()  # The mean is computed from the training records, so they are read now.
  damage(sorted(data_dir.rglob(pattern))[0])
  with pytest.raises(UserError, match=message) as e:
    create_dataset(_imagenet_config(data_dir))
  _one_line(e)


def test_a_damaged_record_file_read_directly_is_one_line(tmp_path):
  path = tmp_path / 'x.tfrecord'
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(50):
      writer.write(np.full(100, i, np.uint8).tobytes())
  _flip_middle_byte(path)
  with pytest.raises(UserError, match=rf'the prepared data in {tmp_path} is damaged \(corrupted '
                                      r'record at \d+\)'):
    list(prepared.as_numpy(tf.data.TFRecordDataset(str(path)), str(tmp_path)))


@pytest.mark.parametrize('content', [b'', b'\x93NUMPY garbage',
                                     np.random.default_rng(0).bytes(999)],
                         ids=['empty', 'bad_header', 'random_bytes'])
def test_a_damaged_mean_cache_is_recomputed(prepared_imagenet, tmp_path, content):
  data_dir = _copy_prepared(prepared_imagenet, tmp_path)
  config = _imagenet_config(data_dir)
  create_dataset(config)
  (cache,) = data_dir.rglob('alexnet_jax_mean_*')
  good = np.load(cache)
  cache.write_bytes(content)
  create_dataset(config)
  np.testing.assert_array_equal(np.load(cache), good)


# --- The Debian Fashion-MNIST files ---------------------------------------------------------------

DEBIAN_DAMAGES = (
    ('cut_short', _cut_at(0.5), r'\S+/t10k-labels-idx1-ubyte\.gz is damaged \(its content does '
                                r'not match the upstream SHA-256 that TFDS checks\); reinstall it'),
    ('flipped_bit', _flip_middle_byte, r'\S+/t10k-labels-idx1-ubyte\.gz is damaged'),
    ('not_gzip', lambda p: p.write_bytes(b'junk' + p.read_bytes()[4:]),
     r'\S+/t10k-labels-idx1-ubyte\.gz is not the gzip file the Debian package ships; reinstall'),
)


@pytest.mark.skipif(not fashion_mnist._debian_files_present(),  # noqa: SLF001
                    reason='the Debian package dataset-fashion-mnist is not installed')
@pytest.mark.parametrize('name,damage,message', DEBIAN_DAMAGES, ids=[d[0] for d in DEBIAN_DAMAGES])
def test_a_damaged_debian_fashion_mnist_file_is_one_line_saying_reinstall(
    tmp_path, monkeypatch, name, damage, message):
  del name
  debian = tmp_path / 'debian'
  shutil.copytree(fashion_mnist.DEBIAN_DIR, debian)
  damage(debian / 't10k-labels-idx1-ubyte.gz')
  monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', debian)
  with pytest.raises(UserError, match=message) as e:
    fashion_mnist.prepare_builder(str(tmp_path / 'data'))
  assert 'apt-get install --reinstall dataset-fashion-mnist' in _one_line(e)
  assert not list((tmp_path / 'data').rglob('*.tfrecord*'))


# --- Checkpoints read for inference and reports ---------------------------------------------------

def _remove(path: str) -> None:
  os.remove(path)


def _state_of_another_run(path: str) -> None:
  """Valid array files of other values (as another run would save): only the saved checksums
  can tell."""
  checkpointer = ocp.StandardCheckpointer()
  state = checkpointer.restore(path)
  shutil.rmtree(path)
  checkpointer.save(path, jax.tree.map(lambda x: x + 1 if np.issubdtype(x.dtype, np.floating)
                                       else x, state))
  checkpointer.wait_until_finished()


def truncate_to_header(path):
  """Keeps a data file's first 8 bytes. Halving it was not enough: the parameters (what
  inference reads) can sit in the first half of every file, the momentum in the second."""
  content = open(path, 'rb').read()
  open(path, 'wb').write(content[:8])


CHECKPOINT_DAMAGES = (
    # (damage, path under checkpoints/2, reason in the message)
    (_state_of_another_run, 'state', r'ValueError: params/\S+ does not match its saved checksum'),
    (flip_bits, 'state/ocdbt.process_0', r''),  # Checksum or TensorStore: where the bits land.
    (truncate_to_header, 'state/ocdbt.process_0', r''),  # TensorStore's wording varies.
    (truncate, 'state/_METADATA', r'ValueError: no readable metadata'),
    (garble_json, 'state/_METADATA', r'ValueError: no readable metadata'),
    (_remove, 'state/manifest.ocdbt', r'ValueError: no readable metadata'),
    (truncate, 'checksums/metadata', r''),
)


@pytest.fixture(scope='module')
def trained_workdir() -> str:
  return shared_tiny_workdir()


def _damaged_copy(workdir: str, tmp_path: pathlib.Path, damage, relative: str) -> str:
  copy = str(tmp_path / 'workdir')
  shutil.copytree(workdir, copy)
  target = os.path.join(copy, 'checkpoints', '2', relative)
  if relative.endswith('ocdbt.process_0'):
    # Every array-data file: inference reads the parameters only, and which file holds them
    # (rather than the optimizer's momentum) varies from run to run.
    for data_file in glob.glob(os.path.join(target, 'd', '*')):
      damage(data_file)
  else:
    damage(target)
  return copy


@pytest.mark.parametrize('damage,relative,reason', CHECKPOINT_DAMAGES,
                         ids=[f'{d[0].__name__}:{d[1]}' for d in CHECKPOINT_DAMAGES])
def test_a_damaged_checkpoint_for_inference_is_one_line_naming_the_step(
    trained_workdir, tmp_path, damage, relative, reason):
  workdir = _damaged_copy(trained_workdir, tmp_path, damage, relative)
  with pytest.raises(UserError) as e:
    trained_model.load(workdir)
  message = _one_line(e)
  assert message.startswith(f'checkpoint step 2 in {workdir}/checkpoints is damaged ('), message
  assert re.search(reason, message), message
  assert message.endswith('pass --checkpoint=DIR/checkpoints/STEP of another step, or train '
                          'again.')


def test_an_intact_checkpoint_still_loads_with_its_checksums_verified(trained_workdir):
  model = trained_model.load(trained_workdir)
  assert model.step == 2 and 'conv1' in model.params


@pytest.mark.parametrize('damage,relative', [(truncate_to_header, 'state/ocdbt.process_0'),
                                             (truncate, 'state/_METADATA'),
                                             (truncate, 'state/manifest.ocdbt')])
@pytest.mark.parametrize('which', ['workdir', 'step'])
def test_a_damaged_checkpoint_for_a_report_is_one_line(trained_workdir, tmp_path, damage,
                                                       relative, which):
  workdir = _damaged_copy(trained_workdir, tmp_path, damage, relative)
  path = workdir if which == 'workdir' else os.path.join(workdir, 'checkpoints', '2')
  with pytest.raises(UserError, match=r'the checkpoint under \S+ is damaged \(') as e:
    checkpoint.read_params(path)
  _one_line(e)


# --- A workdir's config.json, convert's weights, metrics and sweep markers ------------------------

CONFIG_JSON_DAMAGES = (
    ('not_json', b'{"model": {"name": "alex', r'is damaged \(JSONDecodeError: '),
    ('random_bytes', np.random.default_rng(0).bytes(300), r'is damaged \(UnicodeDecodeError: '),
    ('empty', b'', r'is damaged \(JSONDecodeError: '),
    ('a_list', b'[1, 2]', r'is damaged \(a JSON list, not the config object\)'),
)


@pytest.mark.parametrize('name,content,message', CONFIG_JSON_DAMAGES,
                         ids=[d[0] for d in CONFIG_JSON_DAMAGES])
def test_a_damaged_workdir_config_json_is_one_line(tmp_path, name, content, message):
  del name
  (tmp_path / 'config.json').write_bytes(content)
  with pytest.raises(UserError, match=rf'^{tmp_path}/config\.json {message}') as e:
    trained_model.load_config(str(tmp_path))
  assert 'rerun run.py with the config that trained this workdir' in _one_line(e)


def _npz_bytes() -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{'conv1.weight': np.zeros((2, 3), np.float32)})
  return buffer.getvalue()


WEIGHT_DAMAGES = (
    ('random_bytes.npz', np.random.default_rng(0).bytes(2000),
     r'ValueError: This file contains pickled \(object\) data\)'),
    ('cut_short.npz', _npz_bytes()[:200], r'BadZipFile'),
    ('an_npy.npz', b'\x93NUMPY\x01\x00v\x00' + b' ' * 118, r'is damaged or not an \.npz archive'),
    ('flipped_bit.npz', lambda: _flip_bytes_in(_npz_bytes(), 100), r'BadZipFile'),
    ('random_bytes.pth', np.random.default_rng(0).bytes(2000), r'not a torch state_dict'),
)


def _flip_bytes_in(data: bytes, position: int) -> bytes:
  data = bytearray(data)
  data[position] ^= 0x10
  return bytes(data)


@pytest.mark.parametrize('name,content,reason', WEIGHT_DAMAGES, ids=[d[0] for d in WEIGHT_DAMAGES])
def test_a_damaged_weights_file_for_convert_is_one_line_naming_it(tmp_path, name, content,
                                                                  reason):
  if name.endswith('.pth'):
    pytest.importorskip('torch')
  path = tmp_path / name
  path.write_bytes(content() if callable(content) else content)
  with pytest.raises(UserError, match=rf'^{path} is damaged') as e:
    convert._load_arrays(str(path))  # noqa: SLF001
  assert re.search(reason, _one_line(e))


def test_damaged_lines_of_metrics_jsonl_are_skipped(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(b'{"step": 1, "a": 0.5}\n' + np.random.default_rng(0).bytes(300) + b'\n'
                   + b'{"step": 2, "a": 0.25}\n{"step": 3, "a"')
  assert metrics.read_jsonl(str(path)) == [{'step': 1, 'a': 0.5}, {'step': 2, 'a': 0.25}]


def test_a_damaged_sweep_marker_means_the_run_is_redone_and_reported_failed(tmp_path):
  (tmp_path / sweep.MARKER).write_bytes(b'{"status": "fini')
  assert sweep.read_marker(str(tmp_path)) is None  # Not finished: the sweep runs it again.
  run = report.load_run(str(tmp_path), 'variant', 0)
  assert run.status == 'failed' and 'is damaged (JSONDecodeError)' in run.error
  (tmp_path / sweep.MARKER).write_text(json.dumps(['not', 'a', 'marker']))
  assert sweep.read_marker(str(tmp_path)) is None
