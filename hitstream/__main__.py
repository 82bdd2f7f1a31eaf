"""``python -m hitstream``: the same as the ``hitstream`` command."""

from hitstream.main import main

main()
