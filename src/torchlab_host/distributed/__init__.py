"""Training on more than one machine: torchrun across containers of one image."""
