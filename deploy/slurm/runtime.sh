# shellcheck shell=bash
# What torchlab.sbatch and lab.sbatch share (each sources it on the job's first node): the
# container runtime that starts the torchlab image on the nodes (TORCHLAB_RUNTIME), the image
# it starts (TORCHLAB_IMAGE, else the TORCHLAB_VARIANT image in that runtime's form; cuda
# unless said), and the checks that refuse a job in one line, exit 2, before any node works:
#   apptainer  (the default) a .sif file, torchlab-<variant>.sif in the submission folder
#   enroot     pyxis' srun --container-image: an image enroot imports, or an imported squashfs
#   podman     an image in the node's podman storage (podman-hpc sites: its migrated image)
# make slurm-image VARIANT=<variant> TORCHLAB_RUNTIME=<runtime> makes each from the local
# engine's image or from a make image-save file.
#
# Each runtime gives the container the same things: the submission folder at its own path, as
# the working folder (a script's path works inside as outside); the lab's home at /home/lab,
# kept in TORCHLAB_HOME (default ~/.torchlab/home: settings, kernels, the packages you add,
# caches); the node's network, hostname and IPC (torchrun's rendezvous, NCCL between nodes
# and between a node's GPUs); the job's GPUs; and the job's uid, so what it writes is yours.

torchlab_runtime=${TORCHLAB_RUNTIME:-apptainer}
torchlab_variant=${TORCHLAB_VARIANT:-cuda}
torchlab_home=${TORCHLAB_HOME:-$HOME/.torchlab/home}
# The variables (names, space-separated) a task's container gets from the job, over the
# image's own of the same name (TORCHLAB_LABS): yours in TORCHLAB_PASS, and each script's.
# Apptainer and pyxis hand on the rest of the job's environment too, below the image's.
TORCHLAB_PASS=${TORCHLAB_PASS:-}

torchlab_refuse() { # what is wrong, then the command that fixes it
  echo "torchlab: $1. Fix: $2" >&2
  exit 2
}

torchlab_made_by="make slurm-image VARIANT=$torchlab_variant TORCHLAB_RUNTIME=$torchlab_runtime"
case $torchlab_runtime in
  apptainer)
    torchlab_image=${TORCHLAB_IMAGE:-torchlab-$torchlab_variant.sif}
    command -v apptainer >/dev/null ||
      torchlab_refuse "apptainer is not on this node" "module load apptainer, or another TORCHLAB_RUNTIME (enroot, podman)"
    [[ -f $torchlab_image ]] ||
      torchlab_refuse "the Apptainer image $torchlab_image is not here" "$torchlab_made_by (or apptainer build $torchlab_image docker-daemon://torchlab:$torchlab_variant), or TORCHLAB_IMAGE=path/to/image.sif"
    ;;
  enroot)
    torchlab_image=${TORCHLAB_IMAGE:-ghcr.io#torchlab/torchlab:$torchlab_variant}
    # grep reads it all: grep -q would stop early, and pipefail take srun's SIGPIPE for a no.
    srun --help 2>&1 | grep -- --container-image >/dev/null ||
      torchlab_refuse "srun has no --container-image: pyxis is not installed here" "ask the site for pyxis, or another TORCHLAB_RUNTIME (apptainer, podman)"
    if [[ $torchlab_image == *.sqsh || $torchlab_image == /* ]] && [[ ! -f $torchlab_image ]]; then
      torchlab_refuse "the squashfs image $torchlab_image is not here" "$torchlab_made_by (or enroot import -o $torchlab_image dockerd://torchlab:$torchlab_variant)"
    fi
    ;;
  podman)
    torchlab_image=${TORCHLAB_IMAGE:-torchlab:$torchlab_variant}
    command -v podman >/dev/null ||
      torchlab_refuse "podman is not on this node" "install podman (or podman-hpc), or another TORCHLAB_RUNTIME (apptainer, enroot)"
    podman image exists "$torchlab_image" ||
      torchlab_refuse "the image $torchlab_image is not in this node's podman storage" "$torchlab_made_by, or podman load -i torchlab-$torchlab_variant-....tar.gz (make image-save) on each node"
    ;;
  *)
    torchlab_refuse "TORCHLAB_RUNTIME=$torchlab_runtime is not a runtime these scripts know" "TORCHLAB_RUNTIME=apptainer, enroot (pyxis) or podman"
    ;;
esac
mkdir -p "$torchlab_home"

# One podman container per task, on the task's node: the GPUs are the step's (Slurm's
# indexes, which CDI's nvidia.com/gpu names share), handed in by CDI; CUDA then numbers them
# from 0 inside, so the job's CUDA_VISIBLE_DEVICES stays out. The container stays in the
# step's cgroup (--cgroups=disabled, crun's), under Slurm's limits and accounting, which a
# cgroup of podman's own would take it out of.
# Rootless podman (every user's at a site) maps the user to the same uid inside; a root job's
# container is root's. A site's podman settings (limits, runtime) are its containers.conf's.
torchlab_podman_task() {
  local name="torchlab-$SLURM_JOB_ID-${SLURM_STEP_ID:-0}-${SLURM_NODEID:-0}" gpu gpus variable
  local options=(--rm --name "$name" --sig-proxy=false --no-healthcheck --cgroups=disabled
    --network=host --uts=host --ipc=host --user "$(id -u):$(id -g)"
    --volume "$PWD:$PWD" --workdir "$PWD" --volume "$torchlab_home:/home/lab")
  if ((EUID != 0)); then options+=(--userns=keep-id); fi
  IFS=, read -r -a gpus <<<"${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}"
  for gpu in "${gpus[@]}"; do options+=(--device "nvidia.com/gpu=$gpu"); done
  # shellcheck disable=SC2086 # names, split on spaces
  for variable in $TORCHLAB_PASS; do options+=(--env "$variable"); done
  # scancel and the time limit signal every process of the step at once: podman's own
  # forwarding loses that race (its crun kill is one of them) and the container would live on
  # under conmon. So the signal stops the container by its name, within Slurm's KillWait.
  trap 'podman stop --time 5 "$name" >/dev/null 2>&1; exit 143' TERM INT
  podman run "${options[@]}" "$torchlab_image" "$@" &
  wait "$!"
}

# torchlab_srun SRUN_OPTION... -- COMMAND...: COMMAND in the image, in each task srun starts.
torchlab_srun() {
  local options=()
  while (($#)) && [[ $1 != -- ]]; do
    options+=("$1")
    shift
  done
  shift
  local variable listed
  case $torchlab_runtime in
    apptainer)
      # APPTAINERENV_NAME wins over the image's NAME, and keeps values (the lab's token) off
      # the command line, which every user of the node can read.
      # shellcheck disable=SC2086 # names, split on spaces
      for variable in $TORCHLAB_PASS; do export "APPTAINERENV_$variable=${!variable}"; done
      srun "${options[@]}" apptainer exec --nv --home "$torchlab_home:/home/lab" \
        --bind "$PWD" --pwd "$PWD" "$torchlab_image" "$@"
      ;;
    enroot)
      # pyxis' --container-env: these names take the job's value over the image's.
      read -r -a listed <<<"$TORCHLAB_PASS"
      srun "${options[@]}" --container-image="$torchlab_image" --container-workdir="$PWD" \
        --container-mounts="$PWD:$PWD,$torchlab_home:/home/lab" \
        --container-env="$(IFS=, && echo "${listed[*]}")" "$@"
      ;;
    podman)
      # srun hands the job's environment to each task, exported functions included.
      export -f torchlab_podman_task
      export torchlab_image torchlab_home TORCHLAB_PASS
      srun "${options[@]}" bash -c 'torchlab_podman_task "$@"' torchlab "$@"
      ;;
  esac
}
