"""CI as code: the plan `bash .ci/run` follows (the order of the images, what each image's suite
runs and why) and the image steps it runs besides the Make targets a person uses."""
