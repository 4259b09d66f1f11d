"""Provider adapters: vendor SSE streams → our closed union of deltas (``app.llm.deltas``).

``stream_chat(client, ChatRequest)`` (``app.llm.client``) is the entry point; endpoint
resolution lives in ``app.llm.endpoints``, the per-vendor translation in
``app.llm.openai`` and ``app.llm.anthropic``.
"""
