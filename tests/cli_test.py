"""The command-line layer: every entry point's --help, one-line errors, the package boundary.

Entry points are found, not listed: every .py file of the repository outside tests/ with an
`if __name__ == '__main__':` block. Each is run the way its module docstring says it is run (the
first `python ...` command there, with the environment variables written before it), plus --help.
"""

import ast
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from absl import flags
from ml_collections import config_flags

from alexnet_jax import cli

ROOT = pathlib.Path(__file__).parent.parent
COMMAND = re.compile(r'((?:\w+=\S+\s+)*)python\s+(-m\s+[\w.]+|[\w/.]+\.py)')


def entry_points() -> list[pathlib.Path]:
  files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard',
                          '*.py'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
  paths = [ROOT / f for f in files.split() if not f.startswith('tests/')]
  return sorted(p.relative_to(ROOT) for p in paths if p.exists() and _has_main_block(p))


def _has_main_block(path: pathlib.Path) -> bool:
  """A module-level `if __name__ == '__main__':`."""
  for node in ast.parse(path.read_text(encoding='utf-8')).body:
    if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
      sides = [node.test.left, *node.test.comparators]
      if {getattr(s, 'id', getattr(s, 'value', None)) for s in sides} == {'__name__', '__main__'}:
        return True
  return False


def documented_command(path: pathlib.Path) -> tuple[dict[str, str], list[str], str]:
  """(environment, argv without flags, docstring) of the first command in the docstring."""
  doc = ast.get_docstring(ast.parse((ROOT / path).read_text(encoding='utf-8'))) or ''
  match = COMMAND.search(doc.replace('\\\n', ' '))
  assert match, f'{path}: its docstring shows no `python ...` command line'
  env = dict(assignment.split('=', 1) for assignment in match[1].split())
  env = {k: str(ROOT) if v == '.' else v for k, v in env.items()}
  program = match[2].split()
  return env, [sys.executable, *program], doc


ENTRY_POINTS = entry_points()


def test_the_entry_points_are_found():
  names = {str(p) for p in ENTRY_POINTS}
  assert {'run.py', 'alexnet_jax/predict.py', 'alexnet_jax/data/benchmark.py',
          'experiments/lenet_vs_alexnet.py', 'benchmarks/compare.py',
          'tools/parallel_report.py'} <= names, names


def _help(path: pathlib.Path, env: dict[str, str], argv: list[str],
          doc: str) -> tuple[pathlib.Path, subprocess.CompletedProcess, str]:
  # -X importtime: stderr names every module imported, TensorFlow's 2-4 s included.
  result = subprocess.run(
      [argv[0], '-X', 'importtime', *argv[1:], '--help'], cwd=ROOT, capture_output=True,
      text=True, timeout=300, check=False,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'XLA_FLAGS': '', **env})
  return path, result, doc


def _imported(importtime_stderr: str) -> set[str]:
  """The modules a `python -X importtime` run imported (its stderr's last column)."""
  return {line.rsplit('|', 1)[1].strip() for line in importtime_stderr.splitlines()
          if line.startswith('import time:')}


READS_DATA_AT_IMPORT = {'alexnet_jax/data/cifar10.py'}  # The CIFAR-10 preparation: all tf.data.


@pytest.mark.slow
def test_every_entry_point_prints_its_usage_on_help():
  """... without TensorFlow, which only the data pipelines need (and clu's TensorBoard writer,
  imported where a run writes): a config mistake or a weight conversion does not wait for it."""
  # Three at a time: most of the time is importing JAX.
  commands = [(path, *documented_command(path)) for path in ENTRY_POINTS]  # ast: not in threads.
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(lambda command: _help(*command), commands))
  failures = []
  for path, result, doc in results:
    usage_ok = doc.splitlines()[0] in result.stdout and '--log_level' in result.stdout
    stderr = '\n'.join(line for line in result.stderr.splitlines()
                       if not line.startswith('import time:'))
    if result.returncode != 0 or not usage_ok or 'Traceback' in stderr:
      failures.append(f'{path}: exit {result.returncode}\n{result.stdout[-500:]}{stderr[-1500:]}')
    elif ('tensorflow' in _imported(result.stderr)) != (str(path) in READS_DATA_AT_IMPORT):
      failures.append(f'{path}: TensorFlow imported: {"tensorflow" in _imported(result.stderr)}')
  assert not failures, '\n\n'.join(failures)


def _run(*argv: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'XLA_FLAGS': ''})


def _config_file(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
  path = tmp_path / name
  path.write_text(text, encoding='utf-8')
  return path


BAD_COMMAND_LINES = (
    # (tool argv, the one error line it must end with)
    (['-m', 'alexnet_jax.conformance', '--config={syntax_error}'],
     'error: cannot load --config={syntax_error} (SyntaxError: '),
    (['-m', 'alexnet_jax.benchmark', '--config={raises}'],
     "error: cannot load --config={raises} (KeyError: 'x'); fix it or pass a config file such as "
     'configs/default.py.'),
    (['run.py', '--config={raises}', '--workdir={tmp}/w'],
     "error: cannot load --config={raises} (KeyError: 'x'); fix it or pass a config file"),
    (['-m', 'alexnet_jax.conformance', '--config=configs/nonexistent.py'],
     'error: cannot load --config=configs/nonexistent.py (no such file, or it failed to import); '
     'pass a config file such as configs/imagenet.py.'),
    (['-m', 'alexnet_jax.conformance'],
     'error: --config is required: a config file such as configs/imagenet.py.'),
    (['-m', 'alexnet_jax.conformance', '--config=configs/default.py', '--config.no_such=1'],
     'error: --config.no_such names a field the config does not have.'),
    (['-m', 'alexnet_jax.features', '--workdir=/nonexistent', '--output=x.npz', 'stray'],
     'error: unexpected arguments stray; flags are --name=value (see --help).'),
    (['-m', 'alexnet_jax.predict', '--workdir=/nonexistent', 'a.png'],
     'error: /nonexistent/config.json does not exist; --workdir must be a directory written by '
     'run.py or alexnet_jax.convert.'),
    (['-m', 'alexnet_jax.predict', '--no_such_flag'],
     'error: Unknown command line flag \'no_such_flag\''),
    (['-m', 'alexnet_jax.convert', '--caffe=w.npz', '--workdir={tmp}/w'],
     'error: --config is required: a config file such as configs/bvlc_alexnet.py (the '
     'architecture of the weights).'),
    # A default config file: ml_collections applies the overrides when the flag is defined.
    (['experiments/sweep.py', '--workdir={tmp}/s', '--base_config.num_train_stepz=5'],
     'error: --base_config.num_train_stepz names a field the config does not have. Did you mean '
     '"num_train_steps"'),
    (['-m', 'alexnet_jax.benchmark', '--config.batch_sizee=3'],
     'error: --config.batch_sizee names a field the config does not have. Did you mean '
     '"batch_size"'),
    (['experiments/lenet_vs_alexnet.py'],
     'error: pass the trained workdirs to compare: python experiments/lenet_vs_alexnet.py '
     'WORKDIR...'),
)


@pytest.mark.slow
@pytest.mark.parametrize('argv,message', BAD_COMMAND_LINES,
                         ids=[' '.join(a[:3]) for a, _ in BAD_COMMAND_LINES])
def test_command_line_mistakes_and_damaged_config_files_are_one_line(tmp_path, argv, message):
  files = {'syntax_error': _config_file(tmp_path, 'syntax.py', 'def get_config(:\n'),
           'raises': _config_file(tmp_path, 'raises.py',
                                  'def get_config():\n  raise KeyError("x")\n'),
           'tmp': tmp_path}
  argv = [a.format(**files) for a in argv]
  result = _run(*argv)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(message.format(**files)), result.stderr[-2000:]


def _parsed_config_flag(argv: list[str]) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('base_config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)  # Its overrides' flags come from this argv.
  flags.DEFINE_integer('steps', 1, 'Another flag.', flag_values=flag_values)
  flag_values(argv)
  return flag_values


@pytest.mark.parametrize('argv', [
    # A boolean override without a value (the flag after it is not its value), a negated one,
    # two-argument forms, a tuple, a path, a float.
    ['prog', '--base_config', 'configs/cifar10.py', '--base_config.model.lrn_alpha_divided_by_n',
     '--steps=3'],
    ['prog', '--base_config=configs/default.py', '--nobase_config.model.lrn',
     '--base_config.model.conv_features', '(8,16,24,24,16)', '--steps', '3',
     '--base_config.data_dir=/some/where', '--base_config.learning_rate=0.02'],
])
def test_a_child_process_rebuilds_the_parents_config(argv):
  parent = _parsed_config_flag(argv)
  forwarded = cli.forwarded_config_args('base_config', parent)
  assert all(arg.startswith('--base_config') for arg in forwarded), forwarded
  child = _parsed_config_flag(['child', *forwarded])
  assert child.base_config.to_dict() == parent.base_config.to_dict()
  assert parent.steps == 3
  file_only = _parsed_config_flag(argv[:3] if argv[1] == '--base_config' else argv[:2])
  assert child.base_config.to_dict() != file_only.base_config.to_dict()  # Overrides came along.


def test_the_package_does_not_import_the_top_level_configs():
  """alexnet_jax must work installed (pip install .), where the repository's configs/ is absent."""
  offenders = []
  for path in (ROOT / 'alexnet_jax').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      if any(n == 'configs' or n.startswith('configs.') for n in names):
        offenders.append(f'{path.relative_to(ROOT)}:{node.lineno}')
  assert not offenders


def _requirements() -> dict[str, str]:
  """{name: the full requirement line} of requirements.txt (names lower-case, '_' as '-')."""
  lines = (ROOT / 'requirements.txt').read_text(encoding='utf-8').splitlines()
  requirements = [line.split('#')[0].strip() for line in lines]
  return {re.split(r'[\s<>=!~;\[]', r)[0].lower().replace('_', '-'): r
          for r in requirements if r}


def test_pyproject_dependencies_are_the_tested_ranges_of_requirements_txt():
  pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))
  project = pyproject['project']
  declared = project['dependencies'] + [d for extra in project['optional-dependencies'].values()
                                        for d in extra]
  tested = _requirements()
  for requirement in declared:
    name = re.split(r'[\s<>=!~;\[]', requirement)[0].lower().replace('_', '-')
    if name in tested:
      assert requirement == tested[name], (requirement, tested[name])
    else:  # Only the optional torch extra lives in requirements-torch.txt.
      torch = (ROOT / 'requirements-torch.txt').read_text(encoding='utf-8')
      assert requirement in torch, requirement
  runtime = {re.split(r'[\s<>=!~;\[]', r)[0].lower() for r in project['dependencies']}
  assert 'pytest' not in runtime and {'jax', 'flax', 'tensorflow-datasets', 'pillow'} <= runtime
