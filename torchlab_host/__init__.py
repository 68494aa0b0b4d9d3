"""torchlab's host tools: build, start, test and measure the images. Never inside an image.

Run by the Makefile with the host's python3 (3.11 or newer, standard library only), with the
toolkit's source on the path for what both sides share (the manifest, the backends' host
checks, the lock reader):
    PYTHONPATH=src python3 -m torchlab_host lab cpu
Every problem a user can hit ends in one line, `torchlab: <what is wrong>. Fix: <command>`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
