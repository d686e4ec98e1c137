"""Datasets: 2-D toy tasks generated in code, and (later) image datasets through TFDS."""
