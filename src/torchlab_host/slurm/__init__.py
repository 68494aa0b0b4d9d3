"""Slurm: the image in the form each container runtime of deploy/slurm starts."""
