"""The desktop sidecar (SPEC §10): the gateway as JSON-RPC 2.0 over stdin/stdout.

``protocol`` (framing, errors, the single stdout writer) → ``methods`` (the method
table over the ``Gateway``) → ``server`` (the stdin loop, ``run_sidecar``) → ``cli``
(``agw sidecar``). Nothing is imported here so ``agw`` starts quickly.
"""
