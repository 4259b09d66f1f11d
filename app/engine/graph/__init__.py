"""GRAPH mode (SPEC §21): workflows as definition files, streamed as a plan.

``run_graph`` is the mode function; ``resume_point`` / ``GraphResume`` find and start from a
node checkpoint (SPEC §20 fork).
"""

from app.engine.graph.checkpoints import GraphResume, fork_refusal, resume_point
from app.engine.graph.executor import run_graph

__all__ = ["GraphResume", "fork_refusal", "resume_point", "run_graph"]
