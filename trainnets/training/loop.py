"""What every training loop shares: when a periodic action is due, and stopping on a signal.

`itstime(step, every, total)` is the one cadence rule (big_vision's `u.itstime`): logging, evaluation and
checkpoints each ask it, instead of writing `step % every` by hand. `StopRequests` turns SIGTERM (a scheduler's
pre-emption) and a first Ctrl-C into a request the loop reads at a step boundary, where it can save; a second
Ctrl-C raises KeyboardInterrupt at once. Its handlers are installed for the `with` block only.
"""
import signal

from trainnets.training import distributed


def itstime(step, every, total=None):
  """Whether an action done every `every` steps is due after `step` (steps counted from 1): at each multiple of
  `every`, and at `total`, the last step, where given. every <= 0: never (but at `total`)."""
  return (every > 0 and step % every == 0) or (total is not None and step == total)


class StopRequests:
  """`with StopRequests() as stop:` ... `stop.signal` is the first SIGTERM or SIGINT received in the block (None
  before any). `stop.agreed(step, every)` is what a loop acts on: in one process, whether a signal came; in a
  multi-process job, only at steps where itstime(step, every) and then whether any process received one (a
  collective, kept off the other steps), so every process stops at the same step."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def _on_signal(self, signum, frame):
    del frame
    if self.signal is None:
      self.signal = signum
    if signum == signal.SIGINT:  # a second Ctrl-C stops at once
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def __enter__(self):
    self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False

  @property
  def name(self):
    """The received signal's name (SIGTERM where another process of the job received it)."""
    return signal.Signals(self.signal or signal.SIGTERM).name

  def agreed(self, step, every):
    if distributed.is_multiprocess():
      return itstime(step, every) and distributed.any_process(self.signal is not None)
    return self.signal is not None
