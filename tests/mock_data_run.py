"""run.py with Fashion-MNIST replaced by `tfds.testing.mock_data`, for tests that launch processes.

Same flags as run.py. The mocked examples are the same in every process (TFDS seeds them) and
match the `mock_fashion_mnist` fixture in conftest.py.
"""

import os
import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == '__main__':
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, root)
  with tfds.testing.mock_data(num_examples=96):
    runpy.run_path(os.path.join(root, 'run.py'), run_name='__main__')
