"""JSONL chat memory V3.1 (SPEC §8): the store, replay to the model, history rebuild."""

from app.memory.history import build_history
from app.memory.lines import ANONYMOUS_OWNER, chat_name, group_runs, read_plan
from app.memory.replay import replay_messages
from app.memory.store import ChatMeta, ChatStore

__all__ = [
    "ANONYMOUS_OWNER",
    "ChatMeta",
    "ChatStore",
    "build_history",
    "chat_name",
    "group_runs",
    "read_plan",
    "replay_messages",
]
