"""trainnets/training/metrics.py's progress lines for logs: timestamped, the first once there is something to show, and
an ETA that leaves out the first step's compilation."""
import io
import os
import subprocess
import sys

from tests.helpers import PROGRESS_LINE
from tests.helpers import ROOT
from trainnets.training import metrics


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


def test_tensorboard_events_are_written_without_tensorflow(tmp_path):
  """Scalars and the config (HParams) as TensorBoard events, by a process that never imports TensorFlow: the
  hidden-units trainer logs them in a run of seconds. A fresh run from step 0 drops the earlier event files."""
  code = ('import sys; from ml_collections import ConfigDict; from trainnets.training import metrics; '
          f'w = metrics.MetricsWriter({str(tmp_path)!r}, start_step=0, tensorboard=True, '
          'config=ConfigDict({"seed": 3})); '
          'w.write(1, train_loss=0.5, epoch=1); w.write(2, train_loss=0.25, epoch=2); w.close(); '
          'print("tensorflow" in sys.modules)')
  for _ in range(2):
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert proc.stdout.strip() == 'False'
  (events,) = os.listdir(tmp_path / 'tensorboard')
  from trainnets import tf_host  # noqa: PLC0415 (reading them back with TensorFlow's own reader)

  read = list(tf_host.tf().compat.v1.train.summary_iterator(str(tmp_path / 'tensorboard' / events)))
  assert read[0].file_version == 'brain.Event:2'
  scalars = [(e.step, v.tag, v.simple_value) for e in read for v in e.summary.value if v.tag == 'train/loss']
  assert scalars == [(1, 'train/loss', 0.5), (2, 'train/loss', 0.25)]
  assert any(v.tag == '_hparams_/session_start_info' for e in read for v in e.summary.value)


def test_writes_behind_run_in_order_off_the_caller_and_raise_their_errors():
  """WriteBehind: calls run in the order submitted, in another thread; a failed call's error comes back at the next
  submit (or at close, after every call); leaving the block on an error waits for the calls and keeps that error."""
  import threading  # noqa: PLC0415

  import pytest  # noqa: PLC0415

  done, threads = [], set()

  def write(i, fail=False):
    threads.add(threading.current_thread())
    if fail:
      raise OSError(f'disk full at {i}')
    done.append(i)

  with metrics.WriteBehind() as behind:
    for i in range(50):
      behind.submit(write, i)
  assert done == list(range(50)) and threading.current_thread() not in threads

  behind = metrics.WriteBehind()
  behind.submit(write, 0, fail=True)
  with pytest.raises(OSError, match='disk full at 0'):
    for i in range(1, 1000):  # the failure surfaces at a later submit, once it has happened
      behind.submit(write, i)
      threading.Event().wait(0.001)
  behind.close()

  behind = metrics.WriteBehind()
  behind.submit(write, 1000, fail=True)
  with pytest.raises(OSError, match='disk full at 1000'):
    behind.close()

  done.clear()
  go = threading.Event()
  with pytest.raises(KeyboardInterrupt), metrics.WriteBehind() as behind:
    behind.submit(go.wait)  # the calls below wait for it
    behind.submit(write, 7, fail=True)
    behind.submit(write, 8)
    go.set()
    raise KeyboardInterrupt
  assert done == [8], 'the calls ran before the block was left'
