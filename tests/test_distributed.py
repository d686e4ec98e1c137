"""Multi-process jobs on one machine: two JAX processes on 127.0.0.1 (CPU, gloo collectives) train like one
process with the same global batch; a dead process ends the other within a bounded time; bad flags get one line."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import assert_one_line_error
from tests.helpers import logged_step
from tests.helpers import message_lines
from tests.helpers import ROOT
from tests.helpers import USER_ENV

MLP = 'experiments/fashion_mnist.py:mlp,quick'


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def command(workdir, tfds_dir, *extra, script='train.py'):
  return [sys.executable, script, f'--config={MLP}', f'--workdir={workdir}', f'--config.data.tfds_dir={tfds_dir}',
          '--config.data.num_train=512', '--config.data.num_test=200', '--config.train.batch_size=64',
          '--config.train.eval_batch_size=100', '--config.train.epochs=2', '--config.train.checkpoint_every=4',
          '--config.train.log_every=1', *extra]


def start_job(workdir, tfds_dir, n=2, script='train.py', extra=None):
  """The n processes of a job; extra[i]: more arguments for process i."""
  port = free_port()
  return [subprocess.Popen(command(workdir, tfds_dir, f'--coordinator_address=127.0.0.1:{port}',
                                   f'--num_processes={n}', f'--process_id={i}', *(extra or {}).get(i, ()),
                                   script=script),
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=USER_ENV)
          for i in range(n)]


def results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


@pytest.mark.slow
def test_two_processes_train_like_one(fashion_mnist_tfds, tmp_path):
  one = subprocess.run(command(tmp_path / 'one', fashion_mnist_tfds), cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=USER_ENV)
  assert one.returncode == 0, one.stderr[-3000:]
  job = start_job(tmp_path / 'two', fashion_mnist_tfds)
  outs = [p.communicate(timeout=300) for p in job]
  for p, (_, err) in zip(job, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'process 0 of 2 (flags): 1 local of 2 devices' in outs[0][0]
  assert 'test accuracy' in outs[0][0] and 'test accuracy' not in outs[1][0], 'only process 0 reports'
  a, b = results(tmp_path / 'one'), results(tmp_path / 'two')
  assert b['processes'] == 2 and len(b['devices']) == 2 and b['steps'] == a['steps'] == 16
  assert b['final_loss'] == pytest.approx(a['final_loss'], rel=1e-4)
  assert b['test_loss'] == pytest.approx(a['test_loss'], rel=1e-4)
  assert b['test_accuracy'] == pytest.approx(a['test_accuracy'], abs=0.011)  # at most one test image of 200 flips
  assert sorted(os.listdir(tmp_path / 'two' / 'checkpoints'), key=int) == ['8', '12', '16']
  evaluation = start_job(tmp_path / 'two', fashion_mnist_tfds, script='eval.py')  # eval.py as a 2-process job
  for p in evaluation:
    assert p.wait(timeout=300) == 0, p.communicate()[1][-3000:]
  with open(tmp_path / 'two' / 'eval.json') as f:
    ev = json.load(f)
  assert ev['step'] == 16 and ev['test_accuracy'] == pytest.approx(b['test_accuracy'])
  assert np.asarray(ev['confusion']).sum() == 200


@pytest.mark.slow
@pytest.mark.parametrize('override', ['--config.train.learning_rate=0.01', '--config.train.epochs=3'])
def test_processes_with_different_configs_are_stopped_before_training(fashion_mnist_tfds, tmp_path, override):
  """Each process compares its resolved config with process 0's at start: a process started with another
  learning rate or length stops the job, every process with the same line naming the key, nothing written."""
  workdir = tmp_path / 'mixed'
  job = start_job(workdir, fashion_mnist_tfds, extra={1: (override,)})
  key = override.split('=')[0].removeprefix('--config.')
  for p in job:
    _, err = p.communicate(timeout=300)
    lines = [l for l in err.splitlines() if l.startswith('error: ')]
    assert p.returncode == 2 and len(lines) == 1, err[-3000:]
    assert f'process 1 resolved another config than process 0 ({key})' in lines[0], lines
  assert not workdir.exists()


@pytest.mark.slow
def test_a_dead_process_ends_the_job_within_bounded_time(fashion_mnist_tfds, tmp_path):
  workdir = tmp_path / 'dead'
  job = start_job(workdir, fashion_mnist_tfds)
  deadline = time.time() + 240
  while logged_step(workdir) < 2 and time.time() < deadline and all(p.poll() is None for p in job):
    time.sleep(0.05)
  assert all(p.poll() is None for p in job), 'both processes are training'
  job[1].kill()
  t0 = time.time()
  _, err = job[0].communicate(timeout=150)
  waited = time.time() - t0
  assert job[0].returncode != 0 and waited < 120, (job[0].returncode, waited)
  lines = message_lines(err)
  assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
  assert 'process 0 of 2 stopped' in lines[0] and 'start all processes again' in lines[0], err[-3000:]
  saved = lines[0].rsplit('traceback: ', 1)[1].rstrip(')')
  assert 'Traceback' in open(saved).read(), 'the traceback is kept in the file the line names'
  os.unlink(saved)


def test_incomplete_distributed_flags_get_one_line(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', f'--config={MLP}', f'--workdir={tmp_path}/w',
                         '--num_processes=2'], cwd=ROOT, capture_output=True, text=True, timeout=120, env=USER_ENV)
  assert_one_line_error(proc, 'pass all three of --coordinator_address, --num_processes and --process_id')
  proc = subprocess.run([sys.executable, 'train.py', f'--config={MLP}', f'--workdir={tmp_path}/w',
                         '--coordinator_address=127.0.0.1:1', '--num_processes=2', '--process_id=2'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, env=USER_ENV)
  assert_one_line_error(proc, '--process_id=2 must be in 0..1')


def test_launch_scripts_dry_run():
  env = {**os.environ, 'DRY_RUN': '1'}
  proc = subprocess.run(['bash', 'scripts/slurm_train.sbatch', 'experiments/alexnet_imagenet.py', '/shared/w',
                         '--config.train.batch_size=1024'], cwd=ROOT, capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr
  assert 'srun --kill-on-bad-exit=1' in proc.stdout and 'train.py --config=experiments/alexnet_imagenet.py' \
      ' --workdir=/shared/w --config.train.batch_size=1024' in proc.stdout
  proc = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', 'my-tpu', 'us-central2-b',
                         'experiments/alexnet_imagenet.py', '/mnt/shared/w'], cwd=ROOT, capture_output=True,
                        text=True, env=env)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all')
  usage = subprocess.run(['bash', 'scripts/slurm_train.sbatch'], cwd=ROOT, capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage:' in usage.stderr


@pytest.mark.slow
def test_sigterm_to_every_process_saves_one_step_then_resumes(fashion_mnist_tfds, tmp_path):
  """SLURM signals every process; they agree on one step, save it together, exit 0, and the same command
  resumes and finishes."""
  workdir = tmp_path / 'terminated'
  job = start_job(workdir, fashion_mnist_tfds)
  deadline = time.time() + 240
  while logged_step(workdir) < 2 and time.time() < deadline and all(p.poll() is None for p in job):
    time.sleep(0.05)
  for p in job:
    p.send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=150) for p in job]
  assert [p.returncode for p in job] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  saved = int(outs[0][0].split('saved the checkpoint at step ')[1].split()[0])
  assert str(saved) in os.listdir(workdir / 'checkpoints') and saved < 16
  assert 'saved the checkpoint' not in outs[1][0], 'process 0 reports for the job'
  resumed = start_job(workdir, fashion_mnist_tfds)
  outs = [p.communicate(timeout=300) for p in resumed]
  assert [p.returncode for p in resumed] == [0, 0], outs[0][1][-2000:]
  assert f'resuming from the checkpoint at step {saved}' in outs[0][0]
  assert results(workdir)['steps'] == 16


@pytest.mark.slow
def test_a_process_that_never_starts_is_named_within_the_join_timeout(tmp_path):
  """Processes 0 and 1 of 3 start, process 2 never does: both stop within --join_timeout with one line naming
  process 2, instead of JAX's C++ abort after minutes."""
  port = free_port()
  job = [subprocess.Popen([sys.executable, 'train.py', f'--config={MLP}', f'--workdir={tmp_path}/w',
                           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=3', f'--process_id={i}',
                           '--join_timeout=4'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=USER_ENV) for i in (0, 1)]
  for p in job:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err[-2000:]
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and 'processes 2 of 3 did not join the job at 127.0.0.1:' in lines[0], err[-2000:]
  assert not os.path.exists(tmp_path / 'w')


def test_process_0_missing_is_named(tmp_path):
  proc = subprocess.run([sys.executable, 'train.py', f'--config={MLP}', f'--workdir={tmp_path}/w',
                         f'--coordinator_address=127.0.0.1:{free_port()}', '--num_processes=2', '--process_id=1',
                         '--join_timeout=2'], cwd=ROOT, capture_output=True, text=True, timeout=120, env=USER_ENV)
  assert_one_line_error(proc, 'process 1 of 2 could not reach process 0 at 127.0.0.1:', 'within 2 s')


@pytest.mark.parametrize('address', ['127.0.0.1:70000', '127.0.0.1', ':1234', 'host:http', '[::1]', '127.0.0.1:22:1'])
def test_bad_coordinator_addresses_get_one_line(tmp_path, address):
  proc = subprocess.run([sys.executable, 'train.py', f'--config={MLP}', f'--workdir={tmp_path}/w',
                         f'--coordinator_address={address}', '--num_processes=2', '--process_id=0'], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, env=USER_ENV)
  assert_one_line_error(proc, f'--coordinator_address={address} is not HOST:PORT with a port in 1..65535')
