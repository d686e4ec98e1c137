"""What every benchmark times with: the median of repeated wall-clock timings (these machines are noisy)."""
import statistics
import time


def median_seconds(fn, repeats):
  """Median wall time of `repeats` calls of fn()."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)
