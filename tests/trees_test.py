"""Leaf names and the one parameter-shape check shared by checkpoints, convert and conformance."""

import dataclasses

import jax
import numpy as np
import pytest

from alexnet_jax import trees
from alexnet_jax.errors import UserError


@dataclasses.dataclass
class _State:
  params: dict
  steps: list


jax.tree_util.register_dataclass(_State, data_fields=['params', 'steps'], meta_fields=[])


def test_flatten_names_dict_keys_attributes_and_indices():
  state = _State({'conv1': {'bias': 1, 'kernel': 2}}, [3, 4])
  assert trees.flatten(state) == [('params/conv1/bias', 1), ('params/conv1/kernel', 2),
                                  ('steps/0', 3), ('steps/1', 4)]


def _problem(name, got, want):
  return f'{name}: {got} vs {want}'


def test_same_shapes_pass_whatever_the_leaf_type():
  params = {'fc': {'kernel': np.zeros((4, 2)), 'bias': np.zeros(2)}}
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  trees.check_same_shapes(params, abstract, _problem)


@pytest.mark.parametrize('got, message', [
    ({'fc': {'kernel': np.zeros((2, 4)), 'bias': np.zeros(2)}}, 'fc/kernel: 2x4 vs 4x2'),
    ({'fc': {'kernel': np.zeros((4, 2))}}, 'fc/bias: nothing vs 2'),
    ({'fc': {'kernel': np.zeros((4, 2)), 'bias': np.zeros(())}}, 'fc/bias: scalar vs 2'),
    ({'fc': {'kernel': np.zeros((4, 2)), 'bias': np.zeros(2), 'scale': np.zeros(2)}},
     'fc/scale: 2 vs nothing'),
])
def test_the_first_differing_leaf_is_named_with_both_shapes(got, message):
  expected = {'fc': {'kernel': np.zeros((4, 2)), 'bias': np.zeros(2)}}
  with pytest.raises(UserError, match=f'^{message}$'):
    trees.check_same_shapes(got, expected, _problem)
