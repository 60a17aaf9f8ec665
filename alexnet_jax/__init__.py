"""AlexNet (Krizhevsky et al. 2012) in JAX: models, data, training, parallel layouts, tools."""

from alexnet_jax import allocator

# Before TensorFlow's and XLA's threads exist: see allocator.py (set ALEXNET_JAX_MALLOC=system to
# keep glibc's defaults).
allocator.keep_freed_memory()
