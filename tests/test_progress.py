"""training/metrics.py's progress lines for logs: timestamped, the first once there is something to show, and an
ETA that leaves out the first step's compilation."""
import io

from tests.helpers import PROGRESS_LINE
from training import metrics


def test_progress_lines_are_timestamped_and_their_eta_leaves_out_compilation():
  now, out = [0.0], io.StringIO()  # a StringIO is not a terminal: plain lines, as in a SLURM log
  progress = metrics.Progress(10, 'fashion_mnist', unit='images', every_s=30, stream=out, clock=lambda: now[0])
  now[0] = 10.0  # the first step compiles for 10 s and brings no fields (not a logging step)
  progress.update(1, work=8)
  assert out.getvalue() == '', 'the first line waits for the epoch, loss and learning rate'
  now[0] = 11.0  # then one step a second
  progress.update(1, work=8, epoch='1/2', loss=0.5, lr=0.01)
  line = out.getvalue().splitlines()[0]
  assert PROGRESS_LINE.match(line) and ' [fashion_mnist] step 2/10 (20.0%) epoch 1/2 loss 0.5 lr 0.01 ' in line
  assert line.endswith('elapsed 0:11 eta 0:08'), line  # 8 steps at 1 s, not 8 at the 5.5 s average
  progress.close()
  assert len(out.getvalue().splitlines()) == 1, 'nothing new since the last line'
