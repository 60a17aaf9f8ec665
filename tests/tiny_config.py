"""The tests' tiny config as a config file, for subprocess runs: --config=tests/tiny_config.py."""

from tests.conftest import tiny_config


def get_config():
  return tiny_config()
