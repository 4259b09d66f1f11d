"""The desktop sidecar (SPEC §10): the gateway as JSON-RPC 2.0 over stdin/stdout.

``protocol`` (framing, errors, the single stdout writer) → ``methods`` (the method
table over the ``Gateway``) → ``server`` (the stdin loop, ``run_sidecar``). The ``agw sidecar``
command and its ``--http-port`` HTTP API are composed in ``app.composition``: this package
never imports ``app.api``. Nothing is imported here so ``agw`` starts quickly.
"""

#: how long requests may take to answer after EOF or SIGTERM (``agw sidecar --shutdown-grace``);
#: here, not in ``server``, so that ``agw`` reads it without importing the gateway
SHUTDOWN_GRACE_S = 10.0
