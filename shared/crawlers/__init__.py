"""Crawler knowledge both sides use: who a user agent claims to be (``identity``), whether
the address bears it out (``verification``, over the operators' published ``ranges``), and
the snapshot a process uses (``snapshot.Crawlers``). Data and provenance: ``data/README.md``."""
