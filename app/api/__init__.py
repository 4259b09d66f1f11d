"""The HTTP edge: FastAPI app, routes, envelope, SSE encoding."""
