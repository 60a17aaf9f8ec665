"""Conformance report: does a config's AlexNet and recipe match the paper, or another source?

    python -m alexnet_jax.conformance --config=configs/imagenet.py
    python -m alexnet_jax.conformance --config=configs/bvlc_alexnet.py --reference=caffe
    python -m alexnet_jax.conformance --config=configs/torchvision.py --checkpoint=/path/to/ckpt

Prints a source's values (`--reference`: paper | cuda_convnet2 | caffe | torchvision, each value
cited in alexnet_jax/recipes.py) next to what is measured from the model itself, never read from
config.model:
  - kernel shapes, strides, padding and multiply-adds from the traced convolutions and matrix
    products (`alexnet_jax.flops`), attributed to a layer by the parameter their kernel comes from;
  - output shapes from the layers' inputs and outputs under `jax.eval_shape`;
  - which input channels a layer's kernels see, from the gradient of one output channel per tower;
  - activation, LRN constants, window and input, same-map normalization, pooling and dropout by
    running what lies between two layers on crafted inputs (the layer's output is replaced through
    `nn.intercept_methods`);
  - parameter count from the parameter tree, init statistics (scale and distribution) from a
    freshly initialised model;
  - learning rates, weight decay, momentum and update form, per parameter, from the optimizer the
    trainer builds, run on a tiny tree.
The rest of the recipe (schedule, batch, input convention, augmentation, test views) is read from
the config keys of those names. Each row is marked match / DIFFERS (n/a where the source does not
record a value); the exit status is 0 only when no row differs. See docs/conformance.md.

Modules: `spec` (a source's network as numbers), `probes` (runs pieces of a model on crafted
inputs), `measure` (what those runs show), `init_stats` and `training` (the init, optimizer and
recipe rows), `rows` (measure a model, compare it with a source), `table` (the text and `run`),
`__main__` (the command line).
"""

from alexnet_jax.conformance.rows import Measurement, Row, compare, measure, report
from alexnet_jax.conformance.table import (exit_status, format_gaps, format_rows, format_sources,
                                           run, summary)
from alexnet_jax.conformance.spec import paper_shapes

__all__ = ['Measurement', 'Row', 'compare', 'exit_status', 'format_gaps', 'format_rows',
           'format_sources',
           'measure', 'paper_shapes', 'report', 'run', 'summary']
