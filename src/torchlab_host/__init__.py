"""torchlab's host tools: build, start, test and measure the images. Never inside an image.

Standard library only, so the Makefile runs them with the host's python3 before any venv
exists (`PYTHONPATH=src python3 -m torchlab_host lab cpu`); `make venv` installs the checkout's
src/ into .venv, where `import torchlab_host` needs no path. The toolkit's standard-library
parts (the manifest, the backends' host checks, the lock reader) are shared with the images.
Every problem a user can hit ends in one line, `torchlab: <what is wrong>. Fix: <command>`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
