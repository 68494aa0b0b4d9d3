"""Images: what each is built from (spec), its staged context, the build, its tags, the
wheelhouse of an offline build, registries, archives, publishing and the reproducibility check."""
