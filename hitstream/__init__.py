"""The command line and the clients: ``hitstream`` (``hitstream.main``) with its
sub-commands (``hitstream.commands``), ``hitstream up``, the replay client
(``hitstream.replay``), which imports nothing of the server but the lane header, and the
Python client with its ASGI/WSGI middleware (``hitstream.client``), which imports the
replay's HTTP helpers and the shared trusted-proxy rule (``shared.proxies``)."""
