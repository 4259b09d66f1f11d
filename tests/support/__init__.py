"""First-class test fixtures: a real gateway on a loopback port, deployment folders, an SSE client."""
