"""The cpu image sizes PyTorch's and OpenMP's threads from its container's CPU limit (the
entrypoint, before any Python starts): `docker run --cpus 1` gives torch one thread and
OMP_NUM_THREADS=1, and a user's own OMP_NUM_THREADS wins. One `docker run` each."""

from __future__ import annotations

import json

# What a process of the container sees: torch's threads, the variables, and the probe's source.
THREADS = (
    "import json, os, torch\n"
    "from torchlab import system\n"
    "print(json.dumps({'torch': torch.get_num_threads(),\n"
    "                  'omp': os.environ.get('OMP_NUM_THREADS'),\n"
    "                  'mkl': os.environ.get('MKL_NUM_THREADS'),\n"
    "                  'from': system.threads_source()}))\n"
)


def threads_in(container, *options: str) -> dict:
    code, output = container.run_to_end(
        "torchlab:cpu", "python", "-c", THREADS, options=("--cpus", "1", *options)
    )
    assert code == 0, output
    return json.loads(output.strip().splitlines()[-1])


def test_a_container_limited_to_one_cpu_runs_torch_and_openmp_on_one_thread(container):
    assert threads_in(container) == {"torch": 1, "omp": "1", "mkl": "1", "from": "the CPU limit"}


def test_a_users_own_omp_num_threads_wins_over_the_limit(container):
    assert threads_in(container, "--env", "OMP_NUM_THREADS=2") == {
        "torch": 2,
        "omp": "2",
        "mkl": None,
        "from": "your OMP_NUM_THREADS",
    }
