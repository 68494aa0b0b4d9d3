"""The xla image on a machine without a TPU: a loud, one-line failure, never a hang."""

from __future__ import annotations

from support import make_lab, one_line_failure, require_image


def test_the_xla_image_without_a_tpu_fails_loudly_instead_of_hanging(container):
    code, output = container.run_to_end(
        "torchlab:xla",
        "torchlab",
        "probe",
        "--no-smoke",
        options=("--env", "PJRT_DEVICE=TPU"),
        timeout=120,
        clean_log=False,
    )
    assert code == 1
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith("torchlab: expected xla, but no TPU found on this machine (PJRT_DEVICE=TPU)")
    )


def test_the_xla_image_refuses_to_guess_a_device(container):
    code, output = container.run_to_end(
        "torchlab:xla", "torchlab", "probe", "--no-smoke", clean_log=False
    )
    assert code == 1 and "PJRT_DEVICE is not set" in output


def test_an_xla_lab_without_a_tpu_is_one_line(labs_folder):
    require_image("torchlab:xla")
    lab = make_lab("xla", labs_folder)
    try:
        line = one_line_failure(lab.up())
        assert "expected xla, but no TPU found on this machine (PJRT_DEVICE=TPU)" in line
    finally:
        lab.host("down")


def test_the_distributed_proof_refuses_xla_with_the_reason(container):
    code, output = container.run_to_end(
        "torchlab:xla",
        "torchrun",
        "--nproc-per-node=2",
        "--rdzv-backend=static",
        "--master-addr=127.0.0.1",
        "--master-port=29500",
        "-m",
        "torchlab",
        "distributed",
        options=("--env", "PJRT_DEVICE=CPU", "--shm-size", "1g"),
        timeout=300,
        clean_log=False,
    )
    assert code == 1
    # torchrun stops the other ranks as soon as one exits, so a rank still importing torch_xla
    # is killed before it can say anything: one line or two, and each one is the refusal.
    said = [line for line in output.splitlines() if line.startswith("torchlab: ")]
    assert said, output[-3000:]
    for line in said:
        assert line.startswith("torchlab: rank "), line
        assert "torchlab distributed does not cover XLA" in line
        assert "Fix: on a TPU VM, train with torch_xla.launch" in line
