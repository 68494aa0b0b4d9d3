"""One person's lab: starting and stopping it, its suite, who it runs as and what it mounts,
and the compose services it runs in."""
