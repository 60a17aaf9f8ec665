"""The per-layer parameter and output-shape table printed by `run.py --summary`."""

import math

import flax
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import data, registry


def parameter_table(config: ml_collections.ConfigDict) -> str:
  model = registry.create_model(config.model)
  images = jnp.zeros((1,) + data.image_shape(config), jnp.float32)
  (logits, variables) = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), images, capture_intermediates=True))
  params = flax.core.unfreeze(variables['params'])
  outputs = variables['intermediates']
  lines = [f'{"layer":<8} {"parameters":<44} {"output (per tower)":<28} {"count":>12}']
  total = 0
  for name, layer_params in params.items():
    shapes = ', '.join(f'{k} {"x".join(map(str, v.shape))}' for k, v in layer_params.items())
    count = sum(math.prod(v.shape) for v in layer_params.values())
    total += count
    out = outputs.get(name, {}).get('__call__', (None,))[0]
    towers = out if isinstance(out, tuple) else (out,)
    out_str = ' + '.join('x'.join(map(str, t.shape[1:])) for t in towers if t is not None)
    lines.append(f'{name:<8} {shapes:<44} {out_str:<28} {count:>12,}')
  lines.append(f'{"total":<8} {"":<44} {"x".join(map(str, logits.shape[1:])):<28} {total:>12,}')
  return '\n'.join(lines)
