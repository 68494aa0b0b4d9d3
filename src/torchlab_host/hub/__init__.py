"""A lab for a class: JupyterHub with DockerSpawner on this machine, and its proxy."""
