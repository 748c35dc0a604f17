"""``mailfarm web``: the HTTP face of the admin tool (for now the REST API under ``/api/v1``).

It sits above :mod:`directory` and :mod:`common` and calls the very service functions the
CLI calls (``directory.provision.*``), so the CLI and the API can never disagree.
"""
