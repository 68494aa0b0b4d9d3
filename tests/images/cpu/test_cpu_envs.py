"""A way out of the lock, kept: torchlab env makes an environment of the user's own with a
release the image's locks forbid, from the index (through this network's CA, which make lab
hands on), its kernel runs a notebook's cell on that release, the probe lists it as not locked,
it is there after make down and make lab-cpu, and one command removes it with its kernel. The
image's own kernel stays the locked one."""

from __future__ import annotations

import json

from support import REPO, TOKEN, in_lab_terminal, request, run_in_kernel

from torchlab.locks import read_pins

# six is in the shared lab lock; 1.16.0 is a release it forbids, small and pure Python.
LOCKED_SIX = read_pins(REPO / "requirements/lab.txt")["six"]
OLD_SIX = "1.16.0"


def shell(base: str, command: str) -> tuple[int, str]:
    return in_lab_terminal(base, TOKEN, command)


def kernels(base: str) -> dict:
    status, body = request("GET", f"{base}/api/kernelspecs", TOKEN)
    assert status == 200, body
    return json.loads(body)


SIX = "import six, sys\nprint(six.__version__, sys.prefix)\n"


def test_an_environment_of_your_own_holds_a_release_the_lock_forbids_and_is_kept(lab_cpu):
    assert OLD_SIX != LOCKED_SIX
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    base = lab_cpu.url("").rstrip("/")
    # The locks refuse it in the image's own environment, as they must.
    code, printed = shell(base, f"pip install --dry-run six=={OLD_SIX}")
    assert code != 0 and f"six=={LOCKED_SIX}" in printed, printed

    code, printed = shell(base, f"torchlab env create old-six six=={OLD_SIX}")
    assert code == 0, printed
    assert "torchlab: made /home/lab/lab-data/envs/old-six, not locked" in printed, printed
    listed = kernels(base)
    assert listed["kernelspecs"]["old-six"]["spec"]["display_name"] == "old-six (not locked)"
    assert listed["default"] == "python3"
    environment = "/home/lab/lab-data/envs/old-six"
    assert run_in_kernel(base, TOKEN, SIX, kernel_name="old-six").split() == [OLD_SIX, environment]
    assert run_in_kernel(base, TOKEN, SIX).split() == [LOCKED_SIX, "/opt/venv"]

    code, printed = shell(base, "torchlab probe --json --no-smoke")
    assert code == 0, printed
    [found] = json.loads(printed)["packages"]["environments"]
    assert (found["name"], found["locked"]) == ("old-six", False)
    assert found["packages"]["six"] == OLD_SIX
    code, printed = shell(base, "torchlab probe --no-smoke")
    [row] = [line for line in printed.splitlines() if line.strip().startswith("envs")]
    assert "old-six" in row and "NOT LOCKED" in row, row

    assert lab_cpu.host("down").returncode == 0
    started = lab_cpu.up()
    assert started.returncode == 0, started.stderr
    assert run_in_kernel(base, TOKEN, SIX, kernel_name="old-six").split() == [OLD_SIX, environment]

    code, printed = shell(base, "torchlab env remove old-six")
    assert code == 0 and "removed the environment old-six and its kernel" in printed, printed
    assert "old-six" not in kernels(base)["kernelspecs"]
    assert not (lab_cpu.labs.parent / "lab-data/envs/old-six").exists()
