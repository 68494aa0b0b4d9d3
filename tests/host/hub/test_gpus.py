"""GPUs handed out by the hub: each GPU server its own device(s), by UUID, from what the host's
nvidia-smi -L lists (recorded in data/nvidia-smi/list-*.txt) and what the running servers'
containers hold; MIG instances where a GPU is partitioned, and make hub refused in one line where
a GPU in MIG mode has none; sharing only when asked, within its cap; a server refused in one
line when none is free; nothing lost when the hub restarts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from torchlab import variants
from torchlab.backends.cuda.driver import smi_devices
from torchlab_host.core.errors import HostError
from torchlab_host.core.settings import Settings
from torchlab_host.hub import manage as hub

RECORDED = Path(__file__).parents[1] / "data/nvidia-smi"
MANIFEST = variants.load()


def listed(recording: str) -> list[str]:
    """The UUIDs of a recording's lines, in its order, read here without the parser."""
    text = (RECORDED / recording).read_text()
    return [line.split("(UUID: ")[1].rstrip(")") for line in text.splitlines()]


def gpus_of(container) -> list[str]:
    [request] = container.host_config["device_requests"]
    assert "Count" not in request  # never "every GPU"
    assert container.labels == {"org.torchlab.gpus": ",".join(request["DeviceIDs"])}
    return request["DeviceIDs"]


@pytest.fixture
def gpu_hub(host, hub_config, monkeypatch):
    """gpu_hub(listing, **settings): a hub serving cpu and cuda on a host whose nvidia-smi -L
    answers that recording, with those hub settings."""

    def started(listing: str, **settings: str):
        host("580", listing=listing)
        monkeypatch.setenv("HUB_PROFILES", "cpu,cuda")
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        return hub_config()

    return started


def refusal(raised: pytest.ExceptionInfo) -> str:
    """The line the user's page shows: one line, what is wrong and its fix."""
    line = raised.value.jupyterhub_message
    assert str(raised.value) == line and "\n" not in line and ". Fix: " in line
    return line


def test_nvidia_smi_lists_each_gpu_or_the_mig_instances_of_a_partitioned_one():
    one, eight = listed("list-one-h100.txt"), listed("list-eight-h100.txt")
    assert [d.uuid for d in smi_devices((RECORDED / "list-one-h100.txt").read_text())] == one
    devices = smi_devices((RECORDED / "list-eight-h100.txt").read_text())
    assert [d.uuid for d in devices] == eight and len(set(eight)) == 8
    assert {d.name for d in devices} == {"NVIDIA H100 80GB HBM3"}
    # An A100 split in seven: its instances, never the GPU itself (which then runs nothing).
    a100, *instances = listed("list-a100-mig.txt")
    devices = smi_devices((RECORDED / "list-a100-mig.txt").read_text())
    assert [d.uuid for d in devices] == instances and len(instances) == 7
    assert a100.startswith("GPU-") and all(uuid.startswith("MIG-") for uuid in instances)
    assert {d.name for d in devices} == {"NVIDIA A100-SXM4-40GB MIG 1g.5gb"}
    # Two H100s, the first partitioned, the second whole.
    h100_0, *h100_0_instances, h100_1 = listed("list-h100-mig.txt")
    devices = smi_devices((RECORDED / "list-h100-mig.txt").read_text())
    assert [d.uuid for d in devices] == [*h100_0_instances, h100_1]
    assert h100_0 not in [d.uuid for d in devices]
    assert [d.name.rpartition(" ")[2] for d in devices] == [
        "3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb", "HBM3"
    ]  # fmt: skip


def test_a_gpu_in_mig_mode_is_handed_out_by_its_instances_alone():
    """What nvidia-smi says of the MIG modes changes nothing where -L lists every MIG-mode GPU's
    instances."""
    for recording in ("list-one-h100.txt", "list-eight-h100.txt", "list-a100-mig.txt",
                      "list-h100-mig.txt"):  # fmt: skip
        listing = (RECORDED / recording).read_text()
        modes = (RECORDED / recording.replace("list-", "mig-mode-")).read_text()
        assert smi_devices(listing, modes) == smi_devices(listing), recording


@pytest.mark.parametrize(
    ("recording", "said"),
    [
        (
            "list-h100-mig-bare.txt",
            "GPU 1 is in MIG mode without MIG instances (they do not outlast a reboot), so a "
            "container handed one can use nothing. Fix: create its instances: sudo nvidia-smi mig "
            "-i 1 -cgi PROFILE,... -C (nvidia-smi mig -i 1 -lgip lists the profiles), or turn MIG "
            "mode off: sudo nvidia-smi -i 1 -mig 0",
        ),
        (
            "list-a100-mig-rebooted.txt",
            "GPUs 0, 1 are in MIG mode without MIG instances (they do not outlast a reboot), so a "
            "container handed one can use nothing. Fix: create its instances: sudo nvidia-smi mig "
            "-i 0 -cgi PROFILE,... -C (nvidia-smi mig -i 0 -lgip lists the profiles), or turn MIG "
            "mode off: sudo nvidia-smi -i 0 -mig 0; the same for GPU 1",
        ),
    ],
)
def test_a_gpu_in_mig_mode_without_instances_stops_make_hub_in_one_line(
    host, one_line, monkeypatch, recording, said
):
    """-L lists such a GPU as if it were whole, and a server handed its UUID would see no GPU:
    the hub refuses to start before any server does, saying how to make it usable."""
    host("580", listing=recording)
    monkeypatch.setenv("HUB_PROFILES", "cpu,cuda")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert one_line(raised.value) == said


def test_eight_servers_get_eight_gpus_and_a_ninth_is_refused_in_one_line(gpu_hub):
    started = gpu_hub("list-eight-h100.txt")
    given = [gpus_of(started.start(f"student{n}", "cuda")) for n in range(8)]
    assert all(len(gpus) == 1 for gpus in given)
    assert [gpus[0] for gpus in given] == listed("list-eight-h100.txt")  # the listing's order
    with pytest.raises(Exception) as raised:
        started.start("student8", "cuda")
    assert refusal(raised) == (
        "no GPU is free for your server: all 8 of this hub's GPUs are taken, each by a server. "
        "Fix: start the cpu profile, or ask whoever runs the hub to stop an idle server or to "
        "let more servers share a GPU: make hub HUB_SERVERS_PER_GPU=2"
    )
    assert "torchlab-hub-user-student8" not in started.engine.containers
    # The cpu profile needs none, and a stopped server's GPU goes to the next one.
    assert "device_requests" not in started.start("student8", "cpu").host_config
    started.stop("student3")
    assert gpus_of(started.start("student9", "cuda")) == given[3]


def test_a_hub_with_one_gpu_gives_it_to_one_server_and_says_so_to_the_next(gpu_hub):
    started = gpu_hub("list-one-h100.txt")
    assert gpus_of(started.start("student0", "cuda")) == listed("list-one-h100.txt")
    with pytest.raises(Exception) as raised:
        started.start("student1", "cuda")
    assert refusal(raised).startswith(
        "no GPU is free for your server: this hub's one GPU is taken by a server. Fix: "
    )


def test_a_class_starting_at_once_gets_a_gpu_each_and_never_two_the_same(gpu_hub):
    started = gpu_hub("list-eight-h100.txt")
    results = started.start_at_once([f"student{n}" for n in range(9)], "cuda")
    given = [gpus_of(result) for result in results if not isinstance(result, Exception)]
    assert sorted(gpus[0] for gpus in given) == sorted(listed("list-eight-h100.txt"))
    [refused] = [result for result in results if isinstance(result, Exception)]
    assert "all 8 of this hub's GPUs are taken" in refused.jupyterhub_message


def test_with_sharing_servers_share_a_gpu_up_to_the_cap_least_held_first(gpu_hub):
    started = gpu_hub("list-eight-h100.txt", HUB_SERVERS_PER_GPU="2")
    eight = listed("list-eight-h100.txt")
    first = [gpus_of(started.start(f"student{n}", "cuda"))[0] for n in range(8)]
    assert first == eight  # each GPU taken once before any is shared
    started.stop("student2")
    started.stop("student5")
    # The two GPUs no one holds now go first, then the least held in the listing's order.
    assert gpus_of(started.start("student8", "cuda")) == [eight[2]]
    assert gpus_of(started.start("student9", "cuda")) == [eight[5]]
    assert gpus_of(started.start("student10", "cuda")) == [eight[0]]
    for n in range(11, 18):
        started.start(f"student{n}", "cuda")
    held = Counter(gpu for c in started.engine.containers.values() for gpu in gpus_of(c))
    assert held == dict.fromkeys(eight, 2)
    with pytest.raises(Exception) as raised:
        started.start("student18", "cuda")
    assert "taken, each by 2 servers" in refusal(raised)
    assert refusal(raised).endswith("HUB_SERVERS_PER_GPU=3")


def test_a_partitioned_gpu_hands_out_its_mig_instances(gpu_hub):
    started = gpu_hub("list-a100-mig.txt")
    a100, *instances = listed("list-a100-mig.txt")
    given = [gpus_of(started.start(f"student{n}", "cuda"))[0] for n in range(7)]
    assert given == instances and a100 not in given
    with pytest.raises(Exception) as raised:
        started.start("student7", "cuda")
    assert "all 7 of this hub's GPUs are taken" in refusal(raised)


def test_a_host_with_a_partitioned_and_a_whole_gpu_hands_out_each_instance_and_the_whole(
    gpu_hub,
):
    started = gpu_hub("list-h100-mig.txt")
    partitioned, *instances, whole = listed("list-h100-mig.txt")
    given = [gpus_of(started.start(f"student{n}", "cuda"))[0] for n in range(5)]
    assert given == [*instances, whole] and partitioned not in given


def test_several_gpus_per_user_are_distinct_and_all_or_nothing(gpu_hub):
    started = gpu_hub("list-eight-h100.txt", HUB_GPUS_PER_USER="3")
    eight = listed("list-eight-h100.txt")
    assert gpus_of(started.start("a", "cuda")) == eight[:3]
    assert gpus_of(started.start("b", "cuda")) == eight[3:6]
    with pytest.raises(Exception) as raised:
        started.start("c", "cuda")
    assert refusal(raised).startswith(
        "no GPU is free for your server: your server needs 3 GPUs and 2 of this hub's 8 are free."
    )
    assert "torchlab-hub-user-c" not in started.engine.containers


def test_a_restarted_hub_learns_every_assignment_from_the_running_containers(gpu_hub, hub_config):
    started = gpu_hub("list-eight-h100.txt")
    before = {f"student{n}": gpus_of(started.start(f"student{n}", "cuda")) for n in range(5)}
    # The hub restarts (an upgrade, a crash): its config runs anew on the same engine, where
    # the servers kept running; it remembers nothing of its own.
    restarted = hub_config(started.engine)
    after = {
        name.removeprefix("torchlab-hub-user-"): gpus_of(container)
        for name, container in restarted.engine.containers.items()
    }
    assert after == before
    eight = listed("list-eight-h100.txt")
    new = [gpus_of(restarted.start(f"late{n}", "cuda"))[0] for n in range(3)]
    assert new == eight[5:] and not set(new) & {gpu for gpus in before.values() for gpu in gpus}
    with pytest.raises(Exception) as raised:
        restarted.start("late3", "cuda")
    assert "all 8 of this hub's GPUs are taken" in refusal(raised)


def test_a_server_started_again_on_the_cpu_keeps_no_gpu(gpu_hub):
    started = gpu_hub("list-one-h100.txt")
    [gpu] = listed("list-one-h100.txt")
    assert gpus_of(started.start("alice", "cuda")) == [gpu]
    started.stop("alice")
    again = started.start("alice", "cpu")
    assert again.labels == {} and "device_requests" not in again.host_config
    assert gpus_of(started.start("bob", "cuda")) == [gpu]


def test_a_cpu_hub_hands_out_no_gpus_and_asks_no_nvidia_smi():
    handed = hub.for_hub(MANIFEST, Settings.load()).environment()  # no nvidia-smi on PATH
    assert (handed["HUB_GPUS"], handed["HUB_GPUS_PER_USER"], handed["HUB_SERVERS_PER_GPU"]) == (
        "[]", "1", "1"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("HUB_GPUS_PER_USER", "9", "HUB_GPUS_PER_USER=9 is more than 8: this host has 8 to hand"),
        ("HUB_GPUS_PER_USER", "0", "HUB_GPUS_PER_USER=0 is not a count"),
        ("HUB_SERVERS_PER_GPU", "9", "HUB_SERVERS_PER_GPU=9 is more than 8: more leaves each"),
        ("HUB_SERVERS_PER_GPU", "two", "HUB_SERVERS_PER_GPU=two is not a count"),
    ],
)
def test_a_gpu_setting_out_of_range_is_one_line(host, one_line, monkeypatch, name, value, said):
    host("580", listing="list-eight-h100.txt")
    monkeypatch.setenv("HUB_PROFILES", "cpu,cuda")
    monkeypatch.setenv(name, value)
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert one_line(raised.value).startswith(said)


def test_gpus_listed_without_uuids_are_one_line(fake_bin, one_line, monkeypatch):
    """A driver whose nvidia-smi -L names GPUs without their UUIDs: the hub cannot hand them
    out one by one, and says so before anything starts."""
    header = (RECORDED / "580.txt").read_text()
    fake_bin("nvidia-ctk", "exit 0")
    fake_bin(
        "nvidia-smi",
        f"case \"$*\" in\n'') /bin/cat <<'EOF'\n{header}EOF\n;;\n"
        "-L) echo 'GPU 0: NVIDIA H100 80GB HBM3';;\n"
        "*) echo 'NVIDIA H100 80GB HBM3, 9.0';;\nesac",
    )
    monkeypatch.setenv("HUB_PROFILES", "cpu,cuda")
    with pytest.raises(HostError) as raised:
        hub.for_hub(MANIFEST, Settings.load())
    assert one_line(raised.value).startswith(
        "nvidia-smi -L names no GPU by its UUID, so the hub cannot give each server its own. "
        "Fix: check that nvidia-smi -L lists the GPUs"
    )
