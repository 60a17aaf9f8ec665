"""Benchmarks that compare alexnet_jax with other frameworks (optional dependencies)."""
