"""Training machinery shared by the experiments: optimisers, compiled steps, workdirs, metrics, errors."""
