# Sourced by the SLURM scripts (slurm_train.sbatch, the sweep's array jobs):
#   run_requeueable JOB_ID COMMAND [ARG ...]
# runs COMMAND in the background and waits for it. SLURM's USR1, which `#SBATCH --signal=B:USR1@120` sends two
# minutes before the time limit, asks the run to save (SIGTERM, which train.py answers by saving a checkpoint and
# exiting 0); once it has exited, `scontrol requeue JOB_ID` requeues the job, which resumes from that checkpoint.
# A signal that comes before the run's PID is known is passed on as soon as it is.
_requeue=0
_requeue_job=''
_run=''

_on_usr1() {
  _requeue=1
  echo "time limit near: the run saves a checkpoint, then job $_requeue_job is requeued to resume from it" >&2
  if [ -n "$_run" ]; then kill -TERM "$_run" 2>/dev/null || true; fi
}

run_requeueable() {
  _requeue_job=$1
  shift
  trap _on_usr1 USR1
  "$@" &
  _run=$!
  if [ "$_requeue" = 1 ]; then kill -TERM "$_run" 2>/dev/null || true; fi
  local status=0
  wait "$_run" || status=$?
  while kill -0 "$_run" 2>/dev/null; do  # a signal interrupted the wait; the run is still saving
    status=0
    wait "$_run" || status=$?
  done
  if [ "$_requeue" = 1 ]; then
    scontrol requeue "$_requeue_job"
    return 0
  fi
  return "$status"
}
