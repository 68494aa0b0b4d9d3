"""What variants.toml asks of the rest of the checkout: the generated files and the checks
that they and the locks agree with it."""
