"""The command-line layer every tool shares: absl flags, the log level, the one-line error exit.

A tool defines its flags in a `define_flags()` function, called only when it runs as a program
(the modules are also imported as libraries, and an absl flag can be defined once per process),
and ends with

    if __name__ == '__main__':
      cli.run(main, define_flags)

`run` adds `--log_level`, parses the flags (a mistake is one `error:` line), and runs `main`
inside `errors.exit_on_user_error`: a UserError prints `error: <message>` and exits 2. The flags
of a trained model (`--workdir`, `--checkpoint`) and of a config file (`--config`) are defined
here once. Nothing here imports JAX or TensorFlow; a tool that imports them at module level
(predict, features, figures, ensemble, convert) takes their import time (~10 s on 2 cores) for
`--help` too.
"""

import logging as pylogging
import os
import re
import sys
import sysconfig
from collections.abc import Callable

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from alexnet_jax.errors import UserError, exit_on_user_error

FLAGS = flags.FLAGS
# --log_level: 'info' shows this project's progress lines and only warnings of the libraries
# (Orbax, TFDS and TensorFlow chatter at INFO); 'debug' shows everything.
LOG_LEVELS = {'debug': logging.DEBUG, 'info': logging.INFO, 'warning': logging.WARNING,
              'error': logging.ERROR}
HELP_FLAGS = {'--help': True, '-h': True, '-?': True, '--helpshort': True, '--helpfull': False}


def define_trained_model_flags() -> None:
  """--workdir (its latest step) and --checkpoint (one step): `load_trained_model` takes one."""
  flags.DEFINE_string('workdir', None, 'Workdir of a trained model (its latest checkpoint).')
  flags.DEFINE_string('checkpoint', None, 'One checkpoint of a trained model: '
                      'DIR/checkpoints/STEP.')


def load_trained_model():
  """The model named by --workdir or --checkpoint (alexnet_jax.trained_model.TrainedModel)."""
  from alexnet_jax import trained_model  # pylint: disable=import-outside-toplevel  # JAX: late.
  return trained_model.load(FLAGS.workdir, FLAGS.checkpoint)


def define_config_flag(default: str | None, help_text: str,
                       name: str = 'config') -> flags.FlagHolder:
  """--NAME=FILE.py (its get_config()), with --NAME.KEY=VALUE overrides of any field.

  With a default file, ml_collections loads it and applies the command line's overrides right
  here, at definition: a mistake there becomes the one `error:` line (exit 2), as in
  parse_flags.
  """
  try:
    return config_flags.DEFINE_config_file(name, default, help_text, lock_config=True)
  except Exception as e:  # pylint: disable=broad-except  # A config file runs any code.
    print(f'error: {_config_error(sys.argv, e)}', file=sys.stderr)
    sys.exit(2)


def config_value(name: str = 'config',
                 example: str = 'configs/default.py') -> ml_collections.ConfigDict:
  """The config of --NAME; UserError when it was not given or its file failed to load."""
  config = FLAGS[name].value
  if isinstance(config, ml_collections.ConfigDict):
    return config
  given = FLAGS[name].present or FLAGS[name].default
  filename = config_flags.get_config_filename(FLAGS[name]) if given else None
  if not filename:
    raise UserError(f'--{name} is required: a config file such as {example}.')
  # config_flags defers the error of a missing file; the others stop parse_flags.
  raise UserError(f'cannot load --{name}={filename} (no such file, or it failed to import); '
                  f'pass a config file such as {example}.')


def forwarded_config_args(name: str = 'config',
                          flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """--NAME=FILE and --NAME.KEY=VALUE per override, from the parsed --NAME flag: the arguments
  that rebuild the same config in a child process. Built from the parsed values, not replayed
  from the command line, so every spelling absl accepts (--NAME.KEY for a boolean, --noNAME.KEY,
  --flagfile, two-argument forms) comes out as KEY=VALUE."""
  flag = flag_values[name]
  args = [f'--{name}={config_flags.get_config_filename(flag)}']
  for key, value in config_flags.get_override_values(flag).items():
    args.append(f'--{name}.{key}={value}')  # str(): what the override parsers read back.
  return args


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with one `error:` line (exit 2) for a flag mistake, including an override
  `--config.KEY=...` of a field the config does not have. --help exits 0 (absl's exits 1)."""
  for arg in argv[1:]:
    if arg == '--':
      break
    if arg in HELP_FLAGS:
      app.usage(shorthelp=HELP_FLAGS[arg], writeto_stdout=True, exitcode=0)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except  # A config file runs any code.
    print(f'error: {_config_error(argv, e)}', file=sys.stderr)
  sys.exit(2)


def _config_error(argv: list[str], error: Exception) -> str:
  """The message for an error raised while absl loaded a config file or applied an override."""
  cause = error
  while cause.args and isinstance(cause.args[0], BaseException):  # AttributeError(KeyError(..)).
    cause = cause.args[0]
  if isinstance(cause, (AttributeError, KeyError)):
    # ml_collections' message: "'key'" and maybe "\nDid you mean "other" instead of "key"?".
    key, _, did_you_mean = str(cause.args[0] if cause.args else cause).partition('\n')
    key = key.strip('\'"')
    override = next((arg.split('=')[0] for arg in argv[1:] if arg.startswith('--')
                     and '.' in arg.split('=')[0] and arg.split('=')[0].endswith(f'.{key}')), None)
    if override:
      return (f'{override} names a field the config does not have. '
              f'{did_you_mean or "Check its spelling against the config file"} (run with '
              '--helpfull to list the fields).')
  files = [arg for arg in argv[1:] if re.fullmatch(r'--\w+=\S+\.py', arg)]
  detail = (str(error).strip().splitlines() or [''])[-1][:200]
  return (f'cannot load {" ".join(files) or "the config file"} ({type(error).__name__}'
          f'{": " + detail if detail else ""}); fix it or pass a config file such as '
          'configs/default.py.')


class ProjectInfoOnly(pylogging.Filter):
  """Keeps INFO lines from this project; libraries (Orbax, TFDS) speak only at WARNING and up.

  A library is what Python installed (site-packages, the standard library); the package itself
  counts as the project wherever it is installed.
  """

  PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
  LIBRARY_DIRS = tuple({sysconfig.get_paths()[key]
                        for key in ('stdlib', 'platstdlib', 'purelib', 'platlib')})

  def filter(self, record: pylogging.LogRecord) -> bool:
    path = os.path.abspath(record.pathname)
    own = path.startswith(self.PACKAGE_DIR) or not path.startswith(self.LIBRARY_DIRS)
    if not own and record.exc_info:
      # E.g. Orbax logs each failed write with a traceback; the project's own line says what
      # happened and what to do, the library's first line is kept as detail.
      record.exc_info, record.exc_text = None, None
    return own or record.levelno >= pylogging.WARNING


def set_log_level(level: str) -> None:
  logging.set_verbosity(LOG_LEVELS[level])
  handler = logging.get_absl_handler()
  for old in [f for f in handler.filters if isinstance(f, ProjectInfoOnly)]:
    handler.removeFilter(old)
  if level != 'debug':
    handler.addFilter(ProjectInfoOnly())


def run(main: Callable[[list[str]], int | None], define_flags: Callable[[], None] | None = None,
        *, log_level: str = 'error', arguments: bool = False) -> None:
  """Runs `main(argv)` as a command: flags, log level, UserError as one `error:` line (exit 2).

  `log_level`: this tool's default for --log_level ('error' keeps library chatter off the
  console of the inference tools). `arguments`: whether the tool takes arguments after the flags
  (predict's image files); otherwise any is an error. main's return value is the exit status.
  """
  defined_before = set(FLAGS)
  if define_flags is not None:
    define_flags()
  flags.DEFINE_enum('log_level', log_level, list(LOG_LEVELS),
                    'Log lines shown: info is this project\'s progress and library warnings; '
                    'debug adds every library\'s lines.')
  # Flags defined here (or by config_flags) belong to this module for absl; listing them as the
  # program's own puts them in its --help.
  shared = {f.name for f in FLAGS.get_flags_for_module(__name__)} | (set(FLAGS) - defined_before)
  for name in sorted(shared):
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])

  def main_with_errors(argv: list[str]) -> int | None:
    set_log_level(FLAGS.log_level)
    with exit_on_user_error():
      if not arguments and len(argv) > 1:
        raise UserError(f'unexpected arguments {" ".join(argv[1:])}; flags are --name=value '
                        '(see --help).')
      return main(argv)

  app.run(main_with_errors, flags_parser=parse_flags)
