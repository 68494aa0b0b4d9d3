"""The lab's kernels: %pip says why it failed where the package index's certificate cannot be
verified, as the image's pip command does (src/torchlab/tls.py)."""

c = get_config()  # noqa: F821 (IPython provides get_config to its config files)
c.InteractiveShellApp.extensions = ["torchlab.tls"]
