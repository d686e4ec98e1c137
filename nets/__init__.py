"""Models as pure functions: `init(key, ...) -> params` and `apply(params, x, ...)`."""
