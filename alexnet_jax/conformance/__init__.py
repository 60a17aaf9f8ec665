"""Paper conformance report: does the configured AlexNet match Krizhevsky et al. (2012)?

    python -m alexnet_jax.conformance --config=configs/imagenet.py
    python -m alexnet_jax.conformance --config=configs/torchvision.py --checkpoint=/path/to/ckpt

Prints the paper's specification (§3, §4.2, §5 and Fig. 2; see docs/paper.md) next to what is
measured from the model itself, never read from the config:
  - kernel shapes, strides, padding and multiply-adds from the traced convolutions and matrix
    products (`alexnet_jax.flops`), attributed to a layer by the parameter their kernel comes from;
  - output shapes from the layers' inputs and outputs under `jax.eval_shape`;
  - which input channels a layer's kernels see, from the gradient of one output channel per tower;
  - activation, LRN constants and window, pooling and dropout by running what lies between two
    layers on crafted inputs (the layer's output is replaced through `nn.intercept_methods`);
  - parameter count from the parameter tree, init statistics from a freshly initialised model.
Each row is marked match / DIFFERS; the exit status is 0 only when no row differs. See
docs/conformance.md for the tables of the shipped configs.

Modules: `spec` (the paper's network as numbers), `probes` (runs pieces of a model on crafted
inputs), `measure` (what those runs show), `report` (the rows, the table, `run`), `__main__` (the
command line).
"""

from alexnet_jax.conformance.report import (Row, exit_status, format_rows, report, run,
                                            summary)
from alexnet_jax.conformance.spec import paper_shapes

__all__ = ['Row', 'exit_status', 'format_rows', 'paper_shapes', 'report', 'run', 'summary']
