"""TensorFlow for the host's work only (input pipelines, TensorBoard events): imported once, on first use, with
every GPU and TPU hidden from it so it never takes accelerator memory from JAX. Every layer may use it."""
import functools
import os


def quiet(environ=os.environ):
  """TensorFlow's C++ INFO and WARNING lines off, errors kept, unless the user set these variables: a user error
  must stay one line. TensorFlow prints its oneDNN notice at any log level unless TF_ENABLE_ONEDNN_OPTS=0; here
  TF only reads and augments data, and its oneDNN kernels serve model arithmetic this project never runs in TF.
  Must run before TensorFlow is imported."""
  environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


@functools.cache
def tf():
  """The tensorflow module, accelerators hidden."""
  import tensorflow as tf_module  # noqa: PLC0415 (heavy: imported only by what needs it)

  for kind in ('GPU', 'TPU'):
    try:
      tf_module.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised, or no such device kind
      pass
  return tf_module
