#!/bin/bash
# Multi-host TPU VM training: the same command on every worker of a TPU VM slice, at once.
#
#   scripts/tpu_vm_train.sh TPU_NAME ZONE experiments/alexnet_imagenet.py /mnt/shared/workdirs/alexnet [--config.KEY=VALUE ...]
#   DRY_RUN=1 scripts/tpu_vm_train.sh my-v4-32 us-central2-b experiments/alexnet_imagenet.py /mnt/shared/w   # prints only
#
# Each worker runs one process; jax.distributed.initialize() finds the slice's workers from the TPU VM's
# environment. The repository must be checked out at the same path on every worker ($REPO, default
# ~/jax-training, with `make setup` and `pip install "jax[tpu]"` done there), the workdir must be on a file system
# every worker mounts (NFS, Filestore, or a bucket through gcsfuse: workdirs are written with POSIX file calls),
# and the prepared data readable by every worker ($TFDS_DATA_DIR; TFDS also reads gs:// paths directly).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: scripts/tpu_vm_train.sh TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
TPU=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=${REPO:-'~/jax-training'}
EXTRA=''
if [ $# -gt 0 ]; then EXTRA=$(printf '%q ' "$@"); fi  # no overrides: nothing, not printf's ''
REMOTE="cd $REPO && TFDS_DATA_DIR=${TFDS_DATA_DIR:-~/tensorflow_datasets} .venv/bin/python train.py --config=$CONFIG --workdir=$WORKDIR $EXTRA"
CMD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$REMOTE")
if [ -n "${DRY_RUN:-}" ]; then
  printf '%q ' "${CMD[@]}"; echo
  exit 0
fi
exec "${CMD[@]}"
