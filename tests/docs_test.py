"""The docs name only what exists, and the numbers they take from the code are the code's.

Scans README.md, docs/*.md and experiments/README.md for file paths, `python ...` and `make ...`
commands with their `--flags` and `--config.KEY` overrides, and `config.KEY` mentions, and checks
each against the repository: the file exists, the tool defines the flag (read from its source, so
nothing is run), the key is a field of the named config (of some shipped config for a mention
outside a command). Numbers computable from the code (parameter counts, default hyper-parameters,
step counts) are computed and compared with the sentences that state them. A failure names
file:line. No training; shapes only.
"""

import ast
import functools
import glob
import importlib
import math
import os
import re

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import data, optim, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md', *sorted(os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, 'docs', '*.md'))), 'experiments/README.md']
# Directories whose files the docs name; a path under another (workdirs/, /data/...) is an example.
TOP_DIRS = ('alexnet_jax', 'configs', 'docs', 'tests', 'experiments', 'benchmarks', 'tools')
ROOT_FILES = ('run.py', 'Makefile', 'requirements.txt', 'requirements-torch.txt', 'pyproject.toml',
              'pytest.ini', 'README.md')
# Flags of other programs that the docs quote, each beside its source.
OTHER_PROGRAMS_FLAGS = {'mini': "cuda-convnet2's convnet.py (docs/paper.md)",
                        'lr': "torchvision's references/classification (docs/paper.md)",
                        **{name: "pytest-xdist's, in the Makefile's test target"
                           for name in ('numprocesses', 'maxprocesses', 'dist')}}
# absl's own flags and the one cli.run adds to every tool.
COMMON_FLAGS = {'help', 'helpshort', 'helpfull', 'helpxml', 'flagfile', 'undefok', 'log_level',
                'logtostderr', 'alsologtostderr', 'verbosity', 'v', 'log_dir'}


def _read(doc):
  with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
    return f.read()


def _line_of(text, index):
  return text.count('\n', 0, index) + 1


# --- What the docs name ----------------------------------------------------------------------


def _commands(doc):
  """(line, command text) of every `python ...` / `make ...` command, continuation lines joined."""
  text = _read(doc)
  found = []
  # Inline code spans; code blocks (fenced or indented) line by line, `\` continuations joined.
  for match in re.finditer(r'`([^`\n]+)`', text):
    span = match.group(1).strip()
    if re.match(r'(\S+/)?python3? |make [a-z]', span):
      found.append((_line_of(text, match.start()), span))
  lines = text.split('\n')
  in_fence = False
  i = 0
  while i < len(lines):
    line = lines[i]
    if line.lstrip().startswith('```'):
      in_fence = not in_fence
      i += 1
      continue
    if in_fence or line.startswith('    '):
      start, command = i + 1, line.strip()
      while command.endswith('\\') and i + 1 < len(lines):
        i += 1
        command = command[:-1].rstrip() + ' ' + lines[i].strip()
      command = re.sub(r'\s+#.*$', '', command)  # A trailing comment.
      command = re.sub(r'^[A-Z_]+=\S+ ', '', command)  # Leading environment assignments.
      command = re.sub(r'^([A-Z_]+=\S+ )+', '', command)
      if re.match(r'(\S+/)?python3? |make [a-z]', command):
        found.append((start, command))
    i += 1
  return found


def _paths(doc):
  """(line, path) of every repository path the doc names, links relative to the doc included."""
  text = _read(doc)
  found = []
  pattern = (r'(?<![\w/.-])((?:' + '|'.join(TOP_DIRS) + r')/[\w./-]*|'
             + '|'.join(re.escape(f) for f in ROOT_FILES) + r')')
  for match in re.finditer(pattern, text):
    path = match.group(1).rstrip('.,:;)')
    if any(c in text[match.end():match.end() + 1] for c in '*<{'):
      continue  # A pattern such as `tests/<module>_test.py` or `configs/*.py`.
    found.append((_line_of(text, match.start()), path))
  for match in re.finditer(r'\]\(([^)#\s]+)(#[^)]*)?\)', text):
    target = match.group(1)
    if not re.match(r'[a-z]+:', target):
      found.append((_line_of(text, match.start()),
                    os.path.normpath(os.path.join(os.path.dirname(doc), target))))
  return found


def _config_mentions(doc):
  """(line, dotted key) of every `config.KEY` or `--config.KEY` mentioned; quoted `error: ...`
  output (which may show a misspelt key on purpose) blanked, keeping the line numbers."""
  text = re.sub(r'`error:[^`]*`', lambda m: '\n' * m.group(0).count('\n'), _read(doc))
  found = []
  for match in re.finditer(r'(?<![\w.-])(?:--)?config((?:\.[a-z_][a-z0-9_]*)+)(\.\*)?', text):
    key = match.group(1)[1:]
    if key.split('.')[0] in ('json', 'py', 'items', 'get', 'update', 'copy', 'model_config'):
      continue  # config.json, a config.py, ConfigDict methods.
    found.append((_line_of(text, match.start()), key))
  return found


def _flag_mentions(doc):
  """(line, name) of every `--flag` in an inline code span that starts with it."""
  text = _read(doc)
  found = []
  for match in re.finditer(r'`([^`\n]+)`', text):
    span = match.group(1).strip()
    if not span.startswith('--'):
      continue  # A command (checked with its tool) or another program's (tensorboard, srun).
    for flag in re.finditer(r'(?<![\w-])--([a-z][\w]*)(?![\w.-])', span):
      found.append((_line_of(text, match.start()), flag.group(1)))
  return found


# --- What the repository has -----------------------------------------------------------------


def _tool_file(command):
  """The Python file a `python ...` command runs, or None for a program that is not ours."""
  words = command.split()
  if words[1] == '-m':
    if len(words) < 3 or not re.fullmatch(r'[\w.]+', words[2]):
      return None  # A pattern, e.g. `python -m alexnet_jax.<tool>`.
    module = words[2]
    if module.split('.')[0] not in ('alexnet_jax', 'benchmarks', 'experiments', 'tools', 'tests'):
      return None
    base = os.path.join(ROOT, *module.split('.'))
    return base + '.py' if os.path.exists(base + '.py') else os.path.join(base, '__main__.py')
  if words[1].startswith('-'):
    return None  # python -c '...'
  return os.path.join(ROOT, words[1])


@functools.cache
def _defined_flags(path):
  """Flag names a tool defines: its DEFINE_* calls, those of the cli.define_* helpers and the
  project modules' define_flags() it calls (read from the sources, nothing imported)."""
  tree = ast.parse(open(path, encoding='utf-8').read())
  names = set()
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    func = node.func
    name = _called_name(node)
    names |= _flags_of_call(node)
    if name.startswith('define_') and name != 'define_config_flag' and \
        isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
      module = os.path.join(ROOT, 'alexnet_jax', func.value.id + '.py')
      if os.path.exists(module) and os.path.abspath(module) != os.path.abspath(path):
        names |= _defined_in_function(module, name)
  for module in _project_imports(tree):  # Flags defined when an imported module loads.
    if os.path.abspath(module) != os.path.abspath(path):
      names |= _module_level_flags(module)
  return names


def _project_imports(tree):
  """Files of the repository's modules that `tree` imports (run, experiments.sweep, ...)."""
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names += [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
  files = [os.path.join(ROOT, *name.split('.')) + '.py' for name in names]
  return [f for f in files if os.path.exists(f)]


@functools.cache
def _module_level_flags(path):
  tree = ast.parse(open(path, encoding='utf-8').read())
  names = set()
  for statement in tree.body:
    if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
      continue
    for node in ast.walk(statement):
      if isinstance(node, ast.Call):
        names |= _flags_of_call(node)
  return names


def _defined_in_function(path, function):
  tree = ast.parse(open(path, encoding='utf-8').read())
  (definition,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                   and n.name == function]
  return set().union(*(_flags_of_call(n) for n in ast.walk(definition)
                        if isinstance(n, ast.Call) and _called_name(n).startswith('DEFINE')))


def _called_name(call):
  """'DEFINE_string' for flags.DEFINE_string(...) or DEFINE_string(...)."""
  func = call.func
  return func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')


def _flags_of_call(call):
  """The flag a call defines: flags.DEFINE_*('name', ...), or cli.define_config_flag's `name=`
  ('config' by default)."""
  name = _called_name(call)
  if name.startswith('DEFINE') and call.args and isinstance(call.args[0], ast.Constant):
    return {call.args[0].value}
  if name != 'define_config_flag':
    return set()
  given = [k.value.value for k in call.keywords
           if k.arg == 'name' and isinstance(k.value, ast.Constant)]
  return set(given) or {'config'}


@functools.cache
def _all_flags():
  """The flags of every tool in the repository."""
  tools = [p for d in ('alexnet_jax', 'experiments', 'benchmarks', 'tools', 'tests')
           for p in glob.glob(os.path.join(ROOT, d, '**', '*.py'), recursive=True)]
  return set().union(*(_defined_flags(p) for p in tools + [os.path.join(ROOT, 'run.py')]))


@functools.cache
def _make_targets():
  text = _read('Makefile')
  return set(re.findall(r'^([a-z][\w.-]*):', text, re.M))


@functools.cache
def _config(spec):
  """The config a `--config=` value names (file[:argument])."""
  path, _, argument = spec.partition(':')
  module = importlib.import_module(path.removesuffix('.py').replace('/', '.'))
  return module.get_config(argument) if argument else module.get_config()


@functools.cache
def _shipped_configs():
  configs = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.relpath(path, ROOT)
    if name.endswith('__init__.py'):
      continue
    configs.append(_config(name))
  return configs


def _has_key(config, key):
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return True


def _key_exists_somewhere(key):
  """A mention may name a key of any shipped config, or of any model's block (registry)."""
  if any(_has_key(c, key) for c in _shipped_configs()):
    return True
  parts = key.split('.')
  if parts[0] == 'model' and len(parts) == 2:
    return any(parts[1] in registry.model_config(name).keys() for name in registry.MODELS)
  return False


# --- The checks --------------------------------------------------------------------------------


def test_every_named_file_exists():
  missing = sorted({f'{doc}:{line}: {path}' for doc in DOCS for line, path in _paths(doc)
                    if not os.path.exists(os.path.join(ROOT, path))})
  assert not missing, 'files named in the docs that do not exist:\n' + '\n'.join(missing)


def test_every_command_runs_something_that_exists_with_flags_it_defines():
  problems = []
  for doc in DOCS:
    for line, command in _commands(doc):
      where = f'{doc}:{line}: `{command}`'
      words = command.split()
      if words[0] == 'make':
        if words[1] not in _make_targets():
          problems.append(f'{where}: no make target {words[1]!r}')
        continue
      tool = _tool_file(command)
      if tool is None:
        continue
      if not os.path.exists(tool):
        problems.append(f'{where}: {os.path.relpath(tool, ROOT)} does not exist')
        continue
      defined = _defined_flags(tool) | COMMON_FLAGS
      config_spec = next((w.split('=', 1)[1] for w in words if w.startswith('--config=')), None)
      for word in words[2:]:
        flag = re.match(r'--([\w.]+)', word)
        if not flag:
          continue
        name = flag.group(1)
        if name.startswith('config.'):
          key = name[len('config.'):]
          config = _config(config_spec) if config_spec else None
          if 'config' not in defined:
            problems.append(f'{where}: --config.{key}, but the tool has no --config')
          elif config is not None and not _has_key(config, key):
            problems.append(f'{where}: {config_spec} has no field {key}')
          elif config is None and not _key_exists_somewhere(key):
            problems.append(f'{where}: no shipped config has a field {key}')
        elif name not in defined and not (name.startswith('no') and name[2:] in defined):
          problems.append(f'{where}: {os.path.relpath(tool, ROOT)} defines no --{name}')
  assert not problems, 'commands in the docs that would fail:\n' + '\n'.join(problems)


def test_every_flag_named_outside_a_command_is_some_tools():
  unknown = [f'{doc}:{line}: --{name}' for doc in DOCS for line, name in _flag_mentions(doc)
             if name not in _all_flags() | COMMON_FLAGS | set(OTHER_PROGRAMS_FLAGS)]
  assert not unknown, 'flags named in the docs that no tool defines:\n' + '\n'.join(unknown)


def test_every_config_key_named_exists():
  missing = [f'{doc}:{line}: config.{key}' for doc in DOCS for line, key in _config_mentions(doc)
             if not _key_exists_somewhere(key)]
  assert not missing, 'config keys named in the docs that no config has:\n' + '\n'.join(missing)


# --- Numbers the code determines -----------------------------------------------------------------


def _parameter_count(config):
  model = registry.create_model(config.model)
  shape = data.image_shape(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def _number(text):
  return float(text.replace(',', ''))


def _find(doc, pattern):
  """(line, match) of the one place `pattern` (a regex over the whole text) matches in `doc`."""
  text = _read(doc)
  matches = list(re.finditer(pattern, text))
  assert len(matches) == 1, f'{doc}: expected one sentence matching {pattern!r}, found ' \
                            f'{len(matches)}; the docs check needs updating with the text'
  return _line_of(text, matches[0].start()), matches[0]


def test_parameter_counts_are_the_models():
  paper, default = _config('configs/imagenet.py'), _config('configs/default.py')
  counts = {'paper': _parameter_count(paper), 'default': _parameter_count(default)}
  claims = [
      ('README.md', r'two-tower AlexNet \(([\d,]+) parameters', 'paper'),
      ('README.md', r'--summary +# per-layer table, total ([\d,]+)', 'paper'),
      ('docs/paper.md', r'the paper, two towers \(groups in conv2/4/5\), 227 input \| \*\*([\d,]+)\*\*',
       'paper'),
      ('docs/conformance.md', r'\(([\d,]+)\)\. The init is fan-in scaled', 'default'),
      ('experiments/results/README.md', r'the default net\s+\(([\d,]+) parameters', 'default'),
  ]
  for doc, pattern, model in claims:
    line, match = _find(doc, pattern)
    assert _number(match.group(1)) == counts[model], \
        f'{doc}:{line}: says {match.group(1)} parameters, the {model} model has {counts[model]:,}'


def test_default_and_paper_hyper_parameters_are_the_configs():
  paper, default = _config('configs/imagenet.py'), _config('configs/default.py')
  line, match = _find('README.md', r'SGD with momentum ([\d.]+), weight decay ([\de.-]+), batch '
                      r'(\d+),\s+learning rate ([\d.]+)\.')
  stated = tuple(_number(g) for g in match.groups())
  assert stated == (paper.momentum, paper.weight_decay, paper.batch_size, paper.learning_rate), \
      f'README.md:{line}: {match.group(0)!r} vs configs/imagenet.py'
  line, match = _find('README.md', r'learning rate ([\d.]+) with a (\w+) decay')
  assert (_number(match.group(1)), match.group(2)) == (default.learning_rate,
                                                        default.lr_schedule), \
      f'README.md:{line}: {match.group(0)!r} vs configs/default.py'


def test_the_default_runs_description_is_the_configs():
  default, paper = _config('configs/default.py'), _config('configs/imagenet.py')
  line, match = _find('README.md', r'progress line every (\d+) steps[^.]*?\sevaluation line every '
                      r'(\d+) steps')
  assert (int(match.group(1)), int(match.group(2))) == (default.log_every_steps,
                                                        default.eval_every_steps), \
      f'README.md:{line}: {match.group(0)!r} vs configs/default.py'
  line, match = _find('README.md', r'at (\d+)x\d+ input and half the paper\'s\s+convolution widths '
                      r'\(fc6/fc7 (\d+)\), (He) initialization')
  halves = tuple(w // 2 for w in paper.model.conv_features)
  described = (int(match.group(1)), halves, (int(match.group(2)),) * 2, 'he')
  actual = (default.input.image_size, tuple(default.model.conv_features),
            tuple(default.model.fc_features), default.model.weight_init)
  assert described == actual, f'README.md:{line}: {described} vs configs/default.py {actual}'


def test_default_run_length_is_the_configs():
  default = _config('configs/default.py')
  length = optim.TrainingLength.from_config(default, 60_000, default.batch_size)  # Fashion-MNIST.
  line, match = _find('README.md', r'\| `python run.py --config=configs/default.py '
                      r'--workdir=DIR` \| ([\d,]+) \((\d+)\)')
  assert (_number(match.group(1)), _number(match.group(2))) == (length.total_steps,
                                                                 default.num_epochs), \
      f'README.md:{line}: {match.group(0)!r}: the config trains {length.total_steps:,} steps ' \
      f'({default.num_epochs} epochs)'


def _command_config(command):
  """The config a `python run.py --config=... --config.KEY=VALUE ...` command trains."""
  words = command.split()
  spec = next(w.split('=', 1)[1] for w in words if w.startswith('--config='))
  config = _config(spec).copy_and_resolve_references()
  overrides = {}
  for word in words:
    if word.startswith('--config.'):
      key, _, value = word[len('--config.'):].partition('=')
      try:
        overrides[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key] = value
  return registry.apply_overrides(config, overrides)


def test_sweep_lengths_are_the_budgets():
  from experiments import sweeps  # pylint: disable=import-outside-toplevel
  line, match = _find('README.md', r'`--seeds=(\d+)`; ablations: (\d+) epochs? per run; Fig\. 1:'
                      r'\s+(\d+) epochs? per run')
  ablations, fig1 = sweeps.SWEEPS['ablations'], sweeps.SWEEPS['fig1']
  # The seeds are those of the commands that made the recorded Fashion-MNIST results.
  results = 'experiments/results/README.md'
  seeds = [int(re.search(r'--seeds=(\d+)', _find(results, rf'python experiments/sweep\.py '
                                                 rf'--sweep={name} --base_config=configs/default\.py [^\n]*')[1].group(0)).group(1))
           for name in ('ablations', 'fig1')]
  assert seeds[0] == seeds[1], f'{results}: the two commands use different --seeds: {seeds}'
  budget = (seeds[0], ablations.budgets['fashion_mnist']['num_epochs'],
            fig1.budgets['fashion_mnist']['num_epochs'])
  assert tuple(int(g) for g in match.groups()) == budget, \
      f'README.md:{line}: {match.group(0)!r}; experiments/sweeps.py and {results} say {budget}'


def test_the_lenet_comparison_commands_train_what_the_text_says():
  doc = 'docs/using_a_trained_model.md'
  line, match = _find(doc, r'Both ran (\d+) steps of batch (\d+) \(([\d.]+) epoch\), cosine '
                      r'schedule from ([\d.]+)')
  steps, batch, epochs, lr = (_number(g) for g in match.groups())
  commands = [c for _, c in _commands(doc) if 'cmp_' in c and c.startswith('python run.py')]
  assert len(commands) == 2, commands
  for command in commands:
    config = _command_config(command)
    stated = (steps, batch, lr, 'cosine')
    trained = (config.num_train_steps, config.batch_size, config.learning_rate,
               config.lr_schedule)
    assert trained == stated, f'{doc}:{line}: says {stated}, `{command}` trains {trained}'
  assert round(steps * batch / 60_000, 2) == epochs, f'{doc}:{line}: {epochs} epoch'


def test_the_finetuning_runs_train_what_the_text_says():
  doc = 'docs/using_a_trained_model.md'
  line, match = _find(doc, r'\(batch (\d+), about ([\d.]+) epoch of those 30,000 images; '
                      r'cosine schedule from ([\d.]+);')
  batch, epochs, lr = (_number(g) for g in match.groups())
  for variant in ('finetune', 'finetune_all', 'scratch'):
    config = _config(f'configs/finetune_fashion_mnist.py:{variant}')
    trained = (config.batch_size, config.learning_rate, config.lr_schedule)
    assert trained == (batch, lr, 'cosine'), f'{doc}:{line}: {variant} trains {trained}'
    assert round(config.num_train_steps * batch / 30_000, 1) == epochs, \
        f'{doc}:{line}: {config.num_train_steps} steps are not {epochs} epoch'
