"""Test-wide settings, applied before JAX starts.

- 8 simulated CPU devices (unless XLA_FLAGS already sets a count), so every test runs the sharded code paths
  that GPUs and TPUs run; the CLI tests' subprocesses inherit it.
- Implicit rank promotion is an error, so a shape bug cannot hide behind broadcasting.
"""
import os

from training import cli

os.environ['XLA_FLAGS'] = cli.cpu_devices_flag(cores=8)

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
