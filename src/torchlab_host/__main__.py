import platform
import sys

# Checked before anything else is imported: an older python3 must get this line, not a traceback.
if sys.version_info < (3, 11):  # noqa: UP036 (the host's python3 may be older than the project's)
    sys.exit(
        f"torchlab: the host tools need Python 3.11 or newer, and python3 is "
        f"{platform.python_version()}. Fix: install python3.11 and run make PYTHON=python3.11 ..."
    )

from torchlab_host.cli import main

sys.exit(main())
