"""Where the image is missing, make lab-cpu tries the registry first: here none answers, so it
says so in one line, within seconds, and builds."""

from __future__ import annotations

import subprocess
import sys
import time

from support import REPO, docker

from torchlab_host.image.tags import image_tags, inputs_tag, inputs_tag_among


def test_without_the_image_the_lab_reports_the_failed_pull_in_one_line_and_builds(lab_cpu):
    own = inputs_tag_among(image_tags("torchlab:cpu"))
    # --no-prune keeps the layers beneath: the build that follows takes them from its cache.
    docker("image", "rm", "--no-prune", "torchlab:cpu", own)
    start = time.monotonic()
    lines, building_after = [], None
    with subprocess.Popen(
        [sys.executable, "-m", "torchlab_host", "lab", "cpu"],
        cwd=REPO, env=lab_cpu.environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    ) as lab:  # fmt: skip
        for line in lab.stdout:
            lines.append(line.rstrip())
            if building_after is None and line.startswith("torchlab: building torchlab:cpu"):
                building_after = time.monotonic() - start
    output = "\n".join(lines)
    assert lab.returncode == 0, output[-3000:]
    pull_lines = [line for line in lines if "cannot pull" in line]
    assert len(pull_lines) == 1, output[-3000:]
    assert pull_lines[0].startswith(f"torchlab: cannot pull ghcr.io/torchlab/{own}: ")
    assert building_after is not None and building_after < 10, output[-3000:]
    assert inputs_tag("torchlab:cpu", own.rsplit("-", 1)[1]) == own
    assert own in image_tags("torchlab:cpu")
    code, _ = lab_cpu.get("/api/status")
    assert code == 200
