"""Protocol adapters (SPEC §17): translations between our event contract and other protocols.

One module per protocol, each a pure translation (``app.contract`` events in, the protocol's
shapes out); the HTTP routes that serve them are thin edges in ``app/api`` over the run service.
"""
