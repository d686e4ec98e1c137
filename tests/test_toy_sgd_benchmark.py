"""benchmarks/toy_sgd.py's count of the work a hidden-units run executed, against which the machine's matmul rate
puts a limit: checked on a workdir whose counts are worked out by hand."""
import json
import subprocess
import sys

from tests.helpers import ROOT
from tests.helpers import USER_ENV


def test_the_run_work_counts_every_model_of_a_group_for_every_epoch_it_ran(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'data': {'num_train': 200}, 'train': {'batch_size': 1}}))
  rows = ([{'step': e, 'depth': 0, 'padded_width': 0, 'models_training': 8} for e in (1, 2, 3)] +
          [{'step': 3 + e, 'depth': 2, 'padded_width': 10, 'models_training': m} for e, m in ((1, 4), (2, 1))])
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  code = f'import sys; sys.argv = ["x"]; from benchmarks import toy_sgd; print(*toy_sgd.run_work({str(tmp_path)!r}))'
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env=USER_ENV,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  updates, flops = map(int, proc.stdout.split())
  # linear net: 2 weights; 3 epochs of 8 models. depth 2 at width 10: 2*10 + 10*10 + 10*1 = 130 weights; the
  # group's 4 models run both epochs, though only one trains in the second.
  assert updates == 8 * 3 * 200 + 4 * 2 * 200
  assert flops == 8 * 3 * (6 * 2 * 200 + 2 * 2 * 200) + 4 * 2 * (6 * 130 * 200 + 2 * 130 * 200)


def test_it_times_the_layout_the_trainer_takes_first():
  """On the CPU the hidden-units trainer's default config trains these 2-10-1 nets models-last."""
  code = 'import sys; sys.argv = ["x"]; from benchmarks import toy_sgd; print(toy_sgd.trainer_layout())'
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env=USER_ENV,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[-1] == 'models_last'
