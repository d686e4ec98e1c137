"""The cluster launch scripts, run here with stand-ins for the cluster's commands (gcloud, srun, scontrol) on
PATH: each script's generated command runs on this machine, and a time limit's signal saves and requeues."""
import os
import subprocess
import sys
import time

import pytest

from experiments import sweep
from tests.helpers import QUICK
from tests.helpers import ROOT
from tests.helpers import USER_ENV


def stand_in(bin_dir, name, body):
  path = bin_dir / name
  path.write_text('#!/bin/bash\n' + body)
  path.chmod(0o755)


def env_with(bin_dir, **extra):
  base = {k: v for k, v in USER_ENV.items() if not k.startswith('SLURM_')}
  return {**base, 'PATH': f'{bin_dir}:{base["PATH"]}', **extra}


@pytest.mark.slow
@pytest.mark.parametrize('extra', [[], ['--config.num_seeds=2']])
def test_the_tpu_script_runs_its_command_on_the_workers(tmp_path, extra):
  """gcloud's stand-in runs the --command every worker would run, here: with no overrides too (printf '%q' of
  none once gave an empty argument that train.py refused)."""
  stand_in(tmp_path, 'gcloud', 'for a in "$@"; do case "$a" in --command=*) cmd="${a#--command=}";; esac; done\n'
                               'exec bash -c "$cmd"\n')
  proc = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', 'my-tpu', 'zone', QUICK, str(tmp_path / 'w'), *extra],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env_with(tmp_path, REPO=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / 'w' / 'results.json').exists()


@pytest.mark.slow
def test_the_slurm_script_finds_the_checkout_and_runs_its_command(tmp_path):
  """srun's stand-in runs the command every node would run; the checkout is found from the directory sbatch was
  run from (sbatch runs a copy of the script elsewhere)."""
  stand_in(tmp_path, 'srun', 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
  copy = tmp_path / 'spool' / 'slurm_script'
  copy.parent.mkdir()
  copy.write_text(open(os.path.join(ROOT, 'scripts', 'slurm_train.sbatch')).read())
  proc = subprocess.run(['bash', str(copy), QUICK, str(tmp_path / 'w')], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300, env=env_with(tmp_path, SLURM_SUBMIT_DIR=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / 'w' / 'results.json').exists()


def test_the_slurm_script_without_a_checkout_says_how_to_name_it(tmp_path):
  copy = tmp_path / 'slurm_script'
  copy.write_text(open(os.path.join(ROOT, 'scripts', 'slurm_train.sbatch')).read())
  proc = subprocess.run(['bash', str(copy), QUICK, str(tmp_path / 'w')], cwd=tmp_path, capture_output=True,
                        text=True, timeout=60, env=env_with(tmp_path, SLURM_SUBMIT_DIR=str(tmp_path)))
  assert proc.returncode == 2 and 'REPO=/path/to/checkout' in proc.stderr and proc.stderr.count('\n') == 1


def signal_and_wait(proc, marker, sig):
  deadline = time.time() + 60
  while (not marker.exists() or 'started' not in marker.read_text()) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(sig)
  return proc.communicate(timeout=60)


def test_a_time_limit_saves_then_requeues_the_job(tmp_path):
  """SLURM's USR1 before the time limit: the run gets SIGTERM (it saves and exits), then the job is requeued."""
  marker = tmp_path / 'marker'
  stand_in(tmp_path, 'srun', 'trap \'echo TERM >> "$MARK"; exit 0\' TERM\necho started >> "$MARK"\n'
                             'while true; do sleep 0.05; done\n')
  stand_in(tmp_path, 'scontrol', 'echo "$@" >> "$MARK"\n')
  proc = subprocess.Popen(['bash', 'scripts/slurm_train.sbatch', QUICK, str(tmp_path / 'w')], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env_with(tmp_path, REPO=ROOT, SLURM_JOB_ID='42', MARK=str(marker)))
  _, err = signal_and_wait(proc, marker, 10)  # SIGUSR1
  assert proc.returncode == 0, err
  assert marker.read_text().split('\n')[:3] == ['started', 'TERM', 'requeue 42'] and 'time limit near' in err


def test_a_sweep_array_task_saves_then_requeues_too(tmp_path):
  marker = tmp_path / 'marker'
  run = [sys.executable, '-c', 'import pathlib, signal, sys, time; m = pathlib.Path(sys.argv[1]); '
         'signal.signal(signal.SIGTERM, lambda *a: (m.write_text(m.read_text() + "TERM\\n"), sys.exit(0))); '
         'm.write_text("started\\n"); time.sleep(60)', str(marker)]
  script = tmp_path / 'array.sbatch'
  script.write_text(sweep.slurm_array_script([{'command': run}], 1, []))
  assert '#SBATCH --signal=B:USR1@120' in script.read_text() and '#SBATCH --requeue' in script.read_text()
  stand_in(tmp_path, 'scontrol', 'echo "$@" >> "$MARK"\n')
  proc = subprocess.Popen(['bash', str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env_with(tmp_path, SLURM_ARRAY_JOB_ID='7', SLURM_ARRAY_TASK_ID='0',
                                                  MARK=str(marker)))
  _, err = signal_and_wait(proc, marker, 10)
  assert proc.returncode == 0, err
  assert marker.read_text().split('\n')[:3] == ['started', 'TERM', 'requeue 7_0']
