"""What every host tool stands on: the Docker engine, the checkout, the settings (the
environment and .env, read once), where labs listen, and the one kind of user error."""
