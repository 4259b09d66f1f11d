"""The contract every layer shares, at the bottom of the layering (SPEC §4, §6, §15).

* ``events`` — the run events of SPEC §6 as one closed union of dataclasses, ``Stamped``
  (an event with its ``seq`` and ``timestamp``) and ``to_wire`` (the one conversion to the wire
  dict, used only by the edges: the SSE encoder, the JSON-RPC encoder, the memory writer);
* ``envelope`` — the JSON envelope ``{code, msg, data}`` of every JSON answer;
* ``bodies`` — the request bodies (query, submit) that HTTP and the sidecar both accept;
* ``runs`` — a run's typed outcome and status.
* ``nesting`` — how deep JSON from outside may nest (``MAX_JSON_DEPTH``) and its iterative count.

Nothing here imports from another package of ``app`` except ``app.errors``.
"""
