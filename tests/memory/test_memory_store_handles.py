"""ChatStore file handles (issue 13): one open file per running run, closed when the run's lock
is released; every line is on disk the moment its append returns; symlinks are never followed.

Open descriptors are read from ``/proc/self/fd`` (what the kernel says this process holds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import PathEscapeError
from app.memory import ChatStore

from tests.support.descriptors import open_descriptors

from .sample_lines import query_line, run_line, step_line, user


@pytest.fixture
def store(tmp_path: Path):
    chat_store = ChatStore(tmp_path / "chats")
    yield chat_store
    chat_store.close()


async def settle(store: ChatStore) -> None:
    """Wait until the writer thread did everything queued so far (an append queues behind it)."""
    await store.append("settle", query_line("r0", "x", ts=0, chat_id="settle"))


async def test_a_run_writes_through_one_descriptor_and_closes_it_at_the_end(store: ChatStore) -> None:
    path = store.directory / "chat_1.json"
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "hello", ts=1))
        during = open_descriptors(path)
        await store.append("chat_1", step_line("r1", 1, [user("hello", ts=1)], ts=2))
        await store.append("chat_1", run_line("r1", ts=3))
        assert len(during) == 1 and open_descriptors(path) == during  # one open for the whole run
        # written, not buffered: another reader sees every line while the run still holds the file
        assert [line["_type"] for line in store.read_lines("chat_1")] == ["query", "step", "run"]
    await settle(store)
    assert open_descriptors(path) == []


async def test_an_append_outside_a_run_leaves_no_descriptor_open(store: ChatStore) -> None:
    await store.append("chat_1", query_line("r1", "hello", ts=1))
    assert open_descriptors(store.directory / "chat_1.json") == []
    assert store.read_lines("chat_1")[0]["query"]["message"] == "hello"


async def test_the_next_run_reopens_and_ends_a_line_cut_short_meanwhile(store: ChatStore) -> None:
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "one", ts=1))
    await settle(store)
    with store.path("chat_1").open("ab") as fp:
        fp.write(b'{"_type": "step", "chatId": "chat_1", "mess')  # a crash mid-line between runs
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r2", "two", ts=2))
        await store.append("chat_1", run_line("r2", ts=3))
    assert [line.get("runId") for line in store.read_lines("chat_1")] == ["r1", "r2", "r2"]
    assert store.path("chat_1").read_bytes().endswith(b"\n")


async def test_a_file_removed_during_a_run_is_created_again(store: ChatStore) -> None:
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "one", ts=1))
        store.path("chat_1").unlink()
        await store.append("chat_1", run_line("r1", ts=2))
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["run"]


async def test_attack_symlinked_chat_file_is_never_written_through(store: ChatStore, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b"")
    store.directory.mkdir(parents=True, exist_ok=True)
    (store.directory / "evil.json").symlink_to(target)
    for held in (False, True):
        with pytest.raises(PathEscapeError):
            if held:
                async with store.lock("evil"):
                    await store.append("evil", query_line("r1", "x", ts=1, chat_id="evil"))
            else:
                await store.append("evil", query_line("r1", "x", ts=1, chat_id="evil"))
    assert target.read_bytes() == b""


async def test_close_closes_the_files_of_runs_still_going(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats")
    lock = store.lock("chat_1")
    await lock.acquire()
    await store.append("chat_1", query_line("r1", "one", ts=1))
    assert len(open_descriptors(store.directory / "chat_1.json")) == 1
    store.close()
    assert open_descriptors(store.directory / "chat_1.json") == []
    lock.release()  # after close: nothing to do, and no error


async def test_the_runs_last_append_closes_its_file_while_the_lock_is_still_held(store: ChatStore) -> None:
    path = store.directory / "chat_1.json"
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "hello", ts=1))
        assert len(open_descriptors(path)) == 1
        await store.append("chat_1", step_line("r1", 1, [user("hello", ts=1)], ts=2), run_line("r1", ts=3),
                           run_ends=True)
        assert open_descriptors(path) == []  # closed on the same trip to the writer thread
        assert [line["_type"] for line in store.read_lines("chat_1")] == ["query", "step", "run"]


async def test_a_line_after_the_runs_end_reopens_the_file_and_the_release_closes_it(store: ChatStore) -> None:
    path = store.directory / "chat_1.json"
    async with store.lock("chat_1"):
        await store.append("chat_1", run_line("r1", ts=1), run_ends=True)
        await store.append("chat_1", step_line("r1", 2, [user("late", ts=2)], ts=2))
        assert len(open_descriptors(path)) == 1
    await settle(store)
    assert open_descriptors(path) == []
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["run", "step"]


async def test_several_lines_with_one_unserialisable_write_nothing(store: ChatStore) -> None:
    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "hello", ts=1))
        with pytest.raises(TypeError):
            await store.append("chat_1", run_line("r1", ts=2), {"_type": "run", "bad": object()}, run_ends=True)
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["query"]
    await settle(store)
    assert open_descriptors(store.directory / "chat_1.json") == []


def test_a_store_that_never_wrote_closes_without_starting_its_writer_thread(tmp_path: Path) -> None:
    import threading

    store = ChatStore(tmp_path / "chats")
    store.close()
    store.close()  # twice: nothing more
    assert not any(thread.name == "chat-store" for thread in threading.enumerate())
    assert not store._writer.started


async def test_on_a_shared_writer_thread_close_closes_the_files_and_leaves_the_thread_to_its_owner(
        tmp_path: Path) -> None:
    from app.writer import WriterThread

    writer = WriterThread("shared-writer")
    store = ChatStore(tmp_path / "chats", writer=writer)
    lock = store.lock("chat_1")
    await lock.acquire()
    await store.append("chat_1", query_line("r1", "one", ts=1))
    assert len(open_descriptors(store.directory / "chat_1.json")) == 1
    store.close()
    assert await writer.run(lambda: "the thread still runs") == "the thread still runs"
    assert open_descriptors(store.directory / "chat_1.json") == []  # closed on the shared thread
    with pytest.raises(RuntimeError, match="closed"):
        await store.append("chat_1", query_line("r2", "two", ts=2))
    lock.release()
    writer.close()
    assert [line["runId"] for line in store.read_lines("chat_1")] == ["r1"]


async def test_attack_a_write_that_fails_half_way_does_not_glue_the_runs_next_line_to_the_half_line(
        store: ChatStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk cuts a step line short while the run keeps the file open. The run's next line
    (its end) must start on a line of its own, else both are lost when the chat is read."""
    import errno
    import os

    from app.memory import store as store_module

    real_write_all = store_module._write_all
    failures = []

    def half_then_full(fd: int, data: bytes) -> None:
        if data.startswith(b'{"_type":"step"') and not failures:
            failures.append(fd)
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    async with store.lock("chat_1"):
        await store.append("chat_1", query_line("r1", "hello", ts=1))
        monkeypatch.setattr(store_module, "_write_all", half_then_full)
        with pytest.raises(OSError, match="No space left"):
            await store.append("chat_1", step_line("r1", 1, [user("hello", ts=1)], ts=2))
        monkeypatch.undo()
        await store.append("chat_1", run_line("r1", ts=3), run_ends=True)
    assert failures
    assert [line["_type"] for line in store.read_lines("chat_1")] == ["query", "run"]


async def test_remove_deletes_the_file_after_the_lines_already_handed_over(store: ChatStore) -> None:
    """A line still queued on the writer thread is written first; the file is gone afterwards
    (removed directly, the queued line would create it again)."""
    import asyncio
    import threading

    gate = threading.Event()
    store._writer.submit(gate.wait, 30)  # the thread is busy: what follows queues behind
    lock = store.lock("chat_1")
    await lock.acquire()
    pending = asyncio.ensure_future(store.append("chat_1", query_line("r1", "one", ts=1)))
    await asyncio.sleep(0)
    lock.release()
    removal = asyncio.ensure_future(store.remove("chat_1"))
    gate.set()
    await pending
    await removal
    await settle(store)
    assert not (store.directory / "chat_1.json").exists()
    assert open_descriptors(store.directory / "chat_1.json") == []
