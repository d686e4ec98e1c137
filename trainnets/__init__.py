"""The library behind train.py and eval.py: data sets and input pipelines (`trainnets.data`), trainers, the sharded
step, checkpoints and logging (`trainnets.training`), switchable speed kernels (`trainnets.kernels`), and the
shared modules every layer uses (errors, file writing, name registries, config keys, TensorFlow's host settings).

The models (`nets`) and the experiment configs (`experiments`) sit beside it, at the top of the checkout; all three
install together with `pip install -e .`.
"""
