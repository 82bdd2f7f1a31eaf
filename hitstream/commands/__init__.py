"""The ``hitstream`` sub-commands, one module per subject; ``hitstream.main`` imports each when its command runs."""
