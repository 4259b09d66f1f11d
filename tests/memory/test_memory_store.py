"""ChatStore: append/read, locking, crash tolerance, path safety, listing (SPEC §8, §9)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

import app.memory
from app.errors import PathEscapeError
from app.memory import ChatStore

from .sample_lines import query_line, run_line, step_line, user


@pytest.fixture
def store(tmp_path: Path):
    chat_store = ChatStore(tmp_path / "chats")
    yield chat_store
    chat_store.close()


def test_public_names_are_sorted() -> None:
    assert app.memory.__all__ == sorted(app.memory.__all__)


async def test_append_then_read(store: ChatStore) -> None:
    lines = [query_line("r1", "hello", ts=1), step_line("r1", 1, [user("hello", ts=1)], ts=2),
             run_line("r1", ts=3)]
    for line in lines:
        await store.append("chat_1", line)
    assert store.exists("chat_1")
    assert store.path("chat_1") == store.directory / "chat_1.json"
    assert store.read_lines("chat_1") == lines
    raw = store.path("chat_1").read_bytes()
    assert raw.count(b"\n") == 3 and raw.endswith(b"\n")


async def test_unicode_is_written_as_is(store: ChatStore) -> None:
    await store.append("c", query_line("r1", "上海天气 🌤", ts=1, chat_id="c"))
    assert "上海天气 🌤".encode() in store.path("c").read_bytes()
    assert store.read_lines("c")[0]["query"]["message"] == "上海天气 🌤"


async def test_other_charset(tmp_path: Path) -> None:
    store = ChatStore(tmp_path, charset="GBK")
    try:
        await store.append("c", query_line("r1", "上海 ☃", ts=1, chat_id="c"))  # ☃ is not in GBK
        assert store.read_lines("c")[0]["query"]["message"] == "上海 ☃"
    finally:
        store.close()


def test_missing_chat(store: ChatStore) -> None:
    assert not store.exists("nope")
    assert store.read_lines("nope") == []
    assert store.chat_meta("nope") is None
    assert store.list_chats(None) == []


async def test_runs_under_the_lock_never_interleave(store: ChatStore) -> None:
    async def run(run_id: str) -> None:
        async with store.lock("chat_1"):
            for n in range(60):
                await store.append("chat_1", step_line(run_id, n, [], ts=n))
                await asyncio.sleep(0)

    await asyncio.gather(run("a"), run("b"), run("c"))
    run_ids = [line["runId"] for line in store.read_lines("chat_1")]
    assert len(run_ids) == 180
    blocks = [run_ids[i] for i in range(len(run_ids)) if i == 0 or run_ids[i] != run_ids[i - 1]]
    assert sorted(blocks) == ["a", "b", "c"]  # each run is one contiguous block
    for run_id in "abc":
        assert [line["_seq"] for line in store.read_lines("chat_1") if line["runId"] == run_id] == list(range(60))


async def test_lock_is_shared_and_dropped_when_unused(store: ChatStore) -> None:
    lock = store.lock("chat_1")
    assert store.lock("chat_1") is lock
    assert store.lock("chat_2") is not lock
    async with lock:
        pass
    del lock
    assert "chat_1" not in store._locks  # nobody holds or awaits it any more: dropped
    with pytest.raises(PathEscapeError):
        store.lock("../x")


async def test_partial_last_line_is_skipped_and_next_append_is_clean(
    store: ChatStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.append("chat_1", query_line("r1", "hi", ts=1))
    with store.path("chat_1").open("ab") as fp:
        fp.write(b'{"_type": "step", "chatId": "chat_1", "runId": "r1", "mess')  # crash mid-line
    with caplog.at_level(logging.WARNING, logger="app.memory.store"):
        assert [line["_type"] for line in store.read_lines("chat_1")] == ["query"]
    assert "skipped" in caplog.text
    await store.append("chat_1", run_line("r1", ts=2))
    await store.append("chat_1", query_line("r2", "again", ts=3))
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["query", "run", "query"]
    assert store.path("chat_1").read_bytes().endswith(b"\n")


async def test_malformed_lines_in_the_middle_are_skipped(store: ChatStore) -> None:
    await store.append("chat_1", query_line("r1", "hi", ts=1))
    with store.path("chat_1").open("ab") as fp:
        fp.write(b"not json at all\n\n[1, 2]\nnull\n\xff\xfe garbage\n")
    await store.append("chat_1", run_line("r1", ts=2))
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["query", "run"]


@pytest.mark.parametrize(
    "chat_id", ["../x", "/etc/passwd", "a/b", "%2e%2e", "..", "a\x00b", "x" * 200, "", "a\\b", ".hidden", "~root"]
)
async def test_path_escapes_are_rejected(store: ChatStore, chat_id: str) -> None:
    with pytest.raises(PathEscapeError):
        store.path(chat_id)
    with pytest.raises(PathEscapeError):
        store.read_lines(chat_id)
    with pytest.raises(PathEscapeError):
        store.exists(chat_id)
    with pytest.raises(PathEscapeError):
        store.chat_meta(chat_id)
    with pytest.raises(PathEscapeError):
        await store.append(chat_id, {"_type": "query"})
    assert not store.directory.exists() or list(store.directory.iterdir()) == []


async def test_chat_meta(store: ChatStore) -> None:
    long_message = "What is the weather\nlike in Shanghai tomorrow, and should I bring an umbrella?"
    await store.append("chat_1", query_line("r1", long_message, ts=1000, owner="alice", agent_key="weather"))
    await store.append("chat_1", step_line("r1", 1, [user(long_message, ts=1001)], ts=1001))
    await store.append("chat_1", run_line("r1", ts=1500))
    meta = store.chat_meta("chat_1")
    assert meta is not None
    assert meta.chat_name == "What is the weather like in Shanghai tom"
    assert len(meta.chat_name) == 40
    assert (meta.first_agent_key, meta.created_at, meta.updated_at, meta.owner) == ("weather", 1000, 1500, "alice")
    assert meta.payload() == {"chatId": "chat_1", "chatName": meta.chat_name, "firstAgentKey": "weather",
                              "createdAt": 1000, "updatedAt": 1500}


async def test_chat_meta_falls_back_to_mtime_when_last_line_is_broken(store: ChatStore) -> None:
    await store.append("c", query_line("r1", "hi", ts=1000, chat_id="c"))
    with store.path("c").open("ab") as fp:
        fp.write(b"x" * 70_000)  # a huge partial line: the tail holds no parsable line
    os.utime(store.path("c"), (1_700_000_000.0, 1_700_000_000.0))
    meta = store.chat_meta("c")
    assert meta is not None and meta.owner == "anonymous"
    assert (meta.created_at, meta.updated_at) == (1000, 1_700_000_000_000)


async def test_list_chats_newest_first_and_owner_filter(store: ChatStore) -> None:
    await store.append("old", query_line("r1", "old", ts=100, owner="alice", chat_id="old"))
    await store.append("new", query_line("r2", "new", ts=300, owner="alice", chat_id="new"))
    await store.append("mid", query_line("r3", "mid", ts=200, owner="bob", chat_id="mid"))
    await store.append("anon", query_line("r4", "anon", ts=250, chat_id="anon"))
    await store.append("old", run_line("r1", ts=400, chat_id="old"))  # old got a newer line
    (store.directory / "notes.txt").write_text("ignored")
    (store.directory / "bad..name.json").write_text("{}\n")
    assert [m.chat_id for m in store.list_chats(None)] == ["old", "new", "anon", "mid"]
    assert [m.chat_id for m in store.list_chats("alice")] == ["old", "new"]
    assert [m.chat_id for m in store.list_chats("bob")] == ["mid"]
    assert [m.chat_id for m in store.list_chats("anonymous")] == ["anon"]
    assert store.list_chats("carol") == []


async def test_list_chats_reads_again_only_the_chat_files_that_changed(store: ChatStore) -> None:
    """Every user's listing walks every chat file to learn its owner: 100,000 chats cost 15 s a
    listing, whoever asked. A file whose inode, size and mtime did not change is not read again."""
    await store.append("c1", query_line("r1", "first", ts=1, owner="alice", chat_id="c1"))
    await store.append("c2", query_line("r2", "second", ts=2, owner="bob", chat_id="c2"))
    assert [m.chat_name for m in store.list_chats("alice")] == ["first"]
    path = store.path("c1")
    info = path.stat()
    with path.open("r+b") as fp:  # other bytes, same inode, size and mtime: only a read would see them
        fp.write(b"z" * info.st_size)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert [m.chat_name for m in store.list_chats("alice")] == ["first"]
    # a change is read: an appended line, a removed chat
    await store.append("c2", run_line("r2", ts=5, chat_id="c2"))
    assert [m.updated_at for m in store.list_chats("bob")] == [5]
    await store.remove("c2")
    assert store.list_chats("bob") == []
