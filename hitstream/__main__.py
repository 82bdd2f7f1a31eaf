"""``python -m hitstream``: the same as the ``hitstream`` command."""

from hitstream.launch import main

main()
