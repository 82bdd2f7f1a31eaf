"""The command line and the clients: ``hitstream`` (``hitstream.main``) with its
sub-commands (``hitstream.commands``), ``hitstream up``, and the replay client
(``hitstream.replay``), which imports nothing of the server but the lane header."""
