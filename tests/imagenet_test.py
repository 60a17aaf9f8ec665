"""The ImageNet pipeline on a tiny fake ILSVRC manual dir, prepared by the real TFDS builder."""

import collections
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import data, metrics
from alexnet_jax.data import Position, create_dataset, fake_ilsvrc, imagenet, preprocessing
from alexnet_jax.errors import UserError
from configs import imagenet as imagenet_config

NUM_VAL, TRAIN_PER_CLASS = 8, 4  # The first 8 validation labels are 8 distinct synsets.
SIZES = ((30, 40), (48, 36), (40, 40))  # Landscape, portrait, square.
MEAN_CACHE = 'alexnet_jax_mean_24px_20images_islow.npy'  # resize_size 24, mean_num_images 20.


def _config(data_dir, manual_dir=None, **input_overrides):
  config = imagenet_config.get_config()
  config.data_dir = str(data_dir)
  config.manual_dir = None if manual_dir is None else str(manual_dir)
  config.batch_size = 8
  config.eval_batch_size = 3
  config.input.shuffle_buffer = 64
  config.input.resize_size = 24  # Tiny shapes; the geometry is the paper's.
  config.input.image_size = 19
  config.input.mean_num_images = 20
  config.input.update(input_overrides)
  return config


def _prepare(root: pathlib.Path, **fake_kwargs) -> tuple[pathlib.Path, list[str]]:
  synsets = fake_ilsvrc.write_fake_ilsvrc(root / 'manual', num_val=NUM_VAL,
                                          train_per_class=TRAIN_PER_CLASS, sizes=SIZES,
                                          **fake_kwargs)
  return root, synsets


@pytest.fixture(scope='module')
def fake(tmp_path_factory):
  root, synsets = _prepare(tmp_path_factory.mktemp('clean'))
  dataset = create_dataset(_config(root / 'data', root / 'manual'))
  return root, synsets, dataset


@pytest.fixture(scope='module')
def corrupt(tmp_path_factory):
  root, _ = _prepare(tmp_path_factory.mktemp('corrupt'), corrupt_train=1, corrupt_val=1)
  return root


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_real_builder_prepares_the_fake_tars_with_the_real_synsets(fake):
  root, synsets, dataset = fake
  assert dataset.num_classes == 1000
  assert dataset.num_train_examples == len(synsets) * TRAIN_PER_CLASS
  assert dataset.num_eval_examples == NUM_VAL
  assert dataset.image_shape == (19, 19, 3)
  label_of = {name: i for i, name in enumerate(dataset.class_names)}
  steps_per_epoch = dataset.num_train_examples // 8
  epoch = _take(dataset.train_batches(), steps_per_epoch)
  assert all(b['image'].shape == (8, 19, 19, 3) and b['image'].dtype == np.float32 for b in epoch)
  assert all(b['label'].dtype == np.int32 and set(b) == {'image', 'label'} for b in epoch)
  # One epoch is every training image exactly once (32 images, 4 batches of 8).
  labels = collections.Counter(np.concatenate([b['label'] for b in epoch]).tolist())
  assert labels == {label_of[s]: TRAIN_PER_CLASS for s in synsets}
  assert (root / 'data' / 'imagenet2012' / '5.1.0' / MEAN_CACHE).exists()


def test_english_class_names_go_with_tfdss_label_order():
  # The names file pairs each WordNet ID with a name; the IDs must be TFDS's labels, in order,
  # or predict would print another class's name.
  wnids = tfds.builder('imagenet2012', data_dir='/nonexistent').info.features['label'].names
  english = data.english_names(data.DATASETS['imagenet2012'].english_names_file)
  assert list(english) == list(wnids)
  assert len(set(english.values())) == 1000  # Unique: WordNet has two "crane" synsets.
  # Well-known ILSVRC-2012 classes by label number.
  for label, name in ((0, 'tench'), (1, 'goldfish'), (281, 'tabby'), (285, 'Egyptian cat'),
                      (340, 'zebra'), (999, 'toilet tissue')):
    assert english[wnids[label]] == name, label
  config = imagenet_config.get_config()
  assert data.readable_class_names(config, wnids[280:282]) == ('grey fox (n02120505)',
                                                               'tabby (n02123045)')
  config.dataset = 'fashion_mnist'
  assert data.readable_class_names(config, ('Coat',)) == ('Coat',)


def test_resume_continues_the_exact_data_order_across_epochs(fake):
  _, _, dataset = fake
  from_start = _take(dataset.train_batches(), 10)  # 4 steps per epoch: crosses two epochs.
  for start in (3, 4, 6):
    resumed = _take(dataset.train_batches(Position.at_step(start, 8, dataset.epoch_size)),
                    10 - start)
    for a, b in zip(from_start[start:], resumed):
      np.testing.assert_array_equal(a['label'], b['label'])
      np.testing.assert_array_equal(a['image'], b['image'])
  # Epochs differ in order and augmentation.
  assert not np.array_equal(from_start[0]['image'], from_start[4]['image'])


def test_a_new_batch_size_continues_with_the_records_not_yet_seen(fake):
  """One step of 8, then batch 16: records 8-23 of epoch 0, augmented as they would have been."""
  root, _, dataset = fake
  config = _config(root / 'data')
  config.batch_size = 16
  larger = create_dataset(config)
  of_eight = _take(dataset.train_batches(), 5)  # 4 steps per epoch (32 images), then epoch 1.
  of_sixteen = _take(larger.train_batches(Position.at_step(1, 8, dataset.epoch_size)), 2)
  for key in ('label', 'image'):
    np.testing.assert_array_equal(of_sixteen[0][key],
                                  np.concatenate([of_eight[1][key], of_eight[2][key]]))
  # Records 24-31 are fewer than a batch of 16: the next batch starts epoch 1.
  np.testing.assert_array_equal(of_sixteen[1]['label'][:8], of_eight[4]['label'])


def test_seed_changes_the_order(fake):
  root, _, dataset = fake
  config = _config(root / 'data')
  config.seed = 1
  other = create_dataset(config)
  a, b = next(dataset.train_batches()), next(other.train_batches())
  assert not np.array_equal(a['image'], b['image'])


def test_processes_read_disjoint_halves_that_cover_the_split(fake):
  root, synsets, dataset = fake
  train_labels, eval_labels = [], []
  for process_index in range(2):
    config = _config(root / 'data')
    config.eval_batch_size = 2
    shard = create_dataset(config, process_index, process_count=2)
    epoch = _take(shard.train_batches(), shard.num_train_examples // 8)
    assert epoch[0]['image'].shape == (4, 19, 19, 3)
    train_labels += np.concatenate([b['label'] for b in epoch]).tolist()
    for batch in shard.eval_batches['']():
      assert batch['image'].shape[0] == 1
      eval_labels += batch['label'][batch['mask']].tolist()
  label_of = {name: i for i, name in enumerate(dataset.class_names)}
  assert collections.Counter(train_labels) == {label_of[s]: TRAIN_PER_CLASS for s in synsets}
  expected_val = [label_of[s] for s in fake_ilsvrc.validation_synsets(NUM_VAL)]
  assert sorted(eval_labels) == sorted(expected_val)


def test_eval_covers_the_split_once_is_deterministic_and_ten_crops_contain_the_centre(fake):
  _, _, dataset = fake
  assert set(dataset.eval_batches) == {'', 'ten_crop'}
  centre = list(dataset.eval_batches['']())
  assert len(centre) == 3  # ceil(8 / 3), the last padded with one masked row.
  masks = np.concatenate([b['mask'] for b in centre])
  np.testing.assert_array_equal(masks, np.arange(9) < 8)
  label_of = {name: i for i, name in enumerate(dataset.class_names)}
  expected_val = [label_of[s] for s in fake_ilsvrc.validation_synsets(NUM_VAL)]
  assert sorted(np.concatenate([b['label'] for b in centre])[masks].tolist()) == sorted(
      expected_val)
  again = list(dataset.eval_batches['']())
  for a, b in zip(centre, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  ten = list(dataset.eval_batches['ten_crop']())
  assert ten[0]['image'].shape == (3, 10, 19, 19, 3)
  for c, t in zip(centre, ten):
    np.testing.assert_array_equal(c['label'], t['label'])
    np.testing.assert_array_equal(c['mask'], t['mask'])
    np.testing.assert_allclose(t['image'][:, 4], c['image'], atol=1e-5)
    np.testing.assert_allclose(t['image'][:, 9], c['image'][:, :, ::-1], atol=1e-5)


def test_eval_images_are_the_centre_crop_minus_the_per_pixel_training_mean(fake):
  root, _, dataset = fake
  builder = tfds.builder('imagenet2012', data_dir=str(root / 'data'))
  # Independent mean: decode the first 20 training records here and average them in numpy.
  records = tfds.as_numpy(builder.as_dataset(
      'train[:20]', decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False))
  decoded = [preprocessing.resize_shorter_side_and_center_crop(
      tf.io.decode_jpeg(r['image']), 24).numpy() for r in records]
  mean = np.mean(decoded, axis=0)
  cached = np.load(root / 'data' / 'imagenet2012' / '5.1.0' / MEAN_CACHE)
  np.testing.assert_allclose(cached, mean, atol=3.0)  # Crop-aware decode vs the literal §2 path.
  first_val = next(iter(tfds.as_numpy(builder.as_dataset(
      'validation', decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False))))
  square = preprocessing.decode_center_square(first_val['image'], 24).numpy()
  expected = (square - cached)[2:21, 2:21]  # Centre 19 of 24: offset (24 - 19) // 2 = 2.
  np.testing.assert_allclose(next(dataset.eval_batches['']())['image'][0], expected, atol=1e-4)
  unit_range = create_dataset(_config(root / 'data', pixel_range=1.0))
  np.testing.assert_allclose(next(unit_range.eval_batches['']())['image'][0], expected / 255,
                             atol=1e-6)


def test_per_channel_mean_and_random_resized_crop_options(fake):
  root, _, _ = fake
  for overrides in ({'mean_subtraction': 'per_channel'},
                    {'augmentation': 'random_resized_crop', 'pca_lighting': False}):
    dataset = create_dataset(_config(root / 'data', **overrides))
    batch = next(dataset.train_batches())
    assert batch['image'].shape == (8, 19, 19, 3)
    assert np.isfinite(batch['image']).all()
  center_only = create_dataset(_config(root / 'data', eval_crops='center'))
  assert set(center_only.eval_batches) == {''}


def test_corrupt_jpegs_are_replaced_or_masked_and_counted(corrupt):
  dataset = create_dataset(_config(corrupt / 'data', corrupt / 'manual'))
  steps_per_epoch = dataset.num_train_examples // 8
  seen = 0
  batches = dataset.train_batches()
  for step in range(2 * steps_per_epoch):
    batch = next(batches)
    count = dataset.corrupt_image_counts().get('train', 0)
    if count > seen:  # This batch held the corrupt record: one row is a copy of another.
      rows = {row.tobytes() for row in batch['image']}
      assert len(rows) == 7, step
      seen = count
  assert seen == 2  # Once per epoch.
  masks = np.concatenate([b['mask'] for b in dataset.eval_batches['']()])
  assert masks.sum() == NUM_VAL - 1
  list(dataset.eval_batches['ten_crop']())
  assert dataset.corrupt_image_counts() == {'train': 2, 'eval': 1, 'eval_ten_crop': 1}
  resumed = next(dataset.train_batches(Position.at_step(3, 8, dataset.epoch_size)))
  np.testing.assert_array_equal(resumed['label'], _take(dataset.train_batches(), 4)[3]['label'])


def test_missing_manual_dir_or_tars_name_the_files_and_where_to_get_them(tmp_path):
  with pytest.raises(UserError, match=r'manual_dir is not set.*ILSVRC2012_img_train\.tar and '
                     r'ILSVRC2012_img_val\.tar.*image-net\.org'):
    create_dataset(_config(tmp_path / 'data'))
  with pytest.raises(UserError, match=r'is not a directory.*image-net\.org'):
    create_dataset(_config(tmp_path / 'data', tmp_path / 'nowhere'))
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'ILSVRC2012_img_train.tar').write_bytes(b'')
  with pytest.raises(UserError, match=r'ILSVRC2012_img_val\.tar is missing from manual_dir') as e:
    create_dataset(_config(tmp_path / 'data', manual))
  assert 'img_train' not in str(e.value).split('missing')[0]


def test_unwritable_data_dir_is_a_user_error(fake, tmp_path):
  root, _, _ = fake
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='data_dir'):
    create_dataset(_config(blocker / 'data', root / 'manual'))


def test_bad_config_values_are_user_errors(fake):
  root, _, _ = fake
  for overrides in ({'augmentation': 'mixup'}, {'mean_subtraction': 'median'},
                    {'eval_crops': 'five'}, {'resize_size': 10}):
    with pytest.raises(UserError, match='config.input'):
      create_dataset(_config(root / 'data', **overrides))
  config = _config(root / 'data')
  config.batch_size = 64
  with pytest.raises(UserError, match='batch_size'):
    create_dataset(config)


def test_prepared_mean_is_not_recomputed(fake, monkeypatch):
  root, _, _ = fake
  monkeypatch.setattr(imagenet, '_records', None)  # Any read of records would now fail.
  builder = tfds.builder('imagenet2012', data_dir=str(root / 'data'))
  mean = imagenet.load_or_compute_mean(builder, _config(root / 'data'), decode=None)
  assert mean.shape == (24, 24, 3)


@pytest.mark.slow
def test_run_py_trains_and_evaluates_on_the_fake_tars(tmp_path):
  root, _ = _prepare(tmp_path, corrupt_train=1, corrupt_val=1)
  workdir = tmp_path / 'workdir'
  overrides = {
      'data_dir': root / 'data', 'manual_dir': root / 'manual',
      'model.conv_features': '(8,16,24,24,16)', 'model.fc_features': '(32,32)',
      'input.resize_size': 76, 'input.image_size': 67, 'input.mean_num_images': 16,
      'input.shuffle_buffer': 64, 'batch_size': 8, 'eval_batch_size': 8, 'num_train_steps': 5,
      'log_every_steps': 1, 'eval_every_steps': 5, 'checkpoint_every_steps': 5}
  command = [sys.executable, 'run.py', '--config=configs/imagenet.py', f'--workdir={workdir}']
  command += [f'--config.{key}={value}' for key, value in overrides.items()]
  result = subprocess.run(command, cwd=pathlib.Path(__file__).parent.parent, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = metrics.read_jsonl(str(workdir / 'metrics.jsonl'))
  evals = [r for r in rows if 'eval/top1_error' in r]
  assert [r['step'] for r in evals] == [5]
  for prefix in ('eval', 'eval_ten_crop'):
    assert 0 <= evals[0][f'{prefix}/top5_error'] <= evals[0][f'{prefix}/top1_error'] <= 1
  train_rows = [r for r in rows if 'train/loss' in r]
  assert [r['step'] for r in train_rows] == [1, 2, 3, 4, 5]
  assert all(np.isfinite(r['train/loss']) for r in train_rows)
  # 32 training images, 4 steps per epoch: the corrupt one was met once in epoch 0 (and maybe in
  # epoch 1's first step); the validation one once per evaluation.
  assert train_rows[-1]['input/corrupt_images_train'] >= 1
