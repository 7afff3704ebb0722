"""The rocksdict state store: API, schema versions, operator errors, and crash safety under kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict, WriteBatch

from scion_appliance import state
from scion_appliance.errors import OperatorError
from scion_appliance.state import StateError, StateStore

PEER_A = bytes(range(32))
PEER_B = bytes(range(1, 33))


def tai64n(seconds: int, nanos: int = 0) -> bytes:
    # TAI64N as Noise/WireGuard write it: 8-byte big-endian 2^62 + seconds, 4-byte big-endian nanoseconds.
    return (2**62 + seconds).to_bytes(8, "big") + nanos.to_bytes(4, "big")


def test_open_creates_store_under_state_dir_and_reopens(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "lib") as store:
        assert store.path == tmp_path / "lib" / state.STORE_NAME
        assert store.schema_version == state.SCHEMA_VERSION
        store.set_handshake_timestamp(PEER_A, tai64n(100))
    assert store.closed
    with StateStore.open(tmp_path / "lib") as store:
        assert store.get_handshake_timestamp(PEER_A) == tai64n(100)
        assert store.get_handshake_timestamp(PEER_B) is None


def test_handshake_mark_never_moves_backwards(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        store.set_handshake_timestamp(PEER_A, tai64n(100, 5))
        store.set_handshake_timestamp(PEER_A, tai64n(100, 4))
        store.set_handshake_timestamp(PEER_A, tai64n(99, 999_999_999))
        assert store.get_handshake_timestamp(PEER_A) == tai64n(100, 5)
        store.set_handshake_timestamp(PEER_A, tai64n(101))
        assert store.get_handshake_timestamp(PEER_A) == tai64n(101)
        # peers are independent
        store.set_handshake_timestamp(PEER_B, tai64n(1))
        assert store.get_handshake_timestamp(PEER_B) == tai64n(1)


def test_handshake_arguments_are_checked(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        with pytest.raises(ValueError, match="peer_public must be 32 bytes, got 31"):
            store.get_handshake_timestamp(bytes(31))
        with pytest.raises(ValueError, match="ts must be 12 bytes, got 8"):
            store.set_handshake_timestamp(PEER_A, bytes(8))


def test_path_quality_round_trip_and_replace(tmp_path: Path) -> None:
    records = {"1#2,3#4": {"rtt_ewma_s": 0.0123, "loss": 0.0, "state": "up"}, "p2": {"state": "down"}}
    with StateStore.open(tmp_path) as store:
        assert store.load_path_quality("1-ff00:0:110") == {}
        store.save_path_quality("1-ff00:0:110", records)
        store.save_path_quality("1-ff00:0:111", {"x": {"state": "up"}})
        assert store.load_path_quality("1-ff00:0:110") == records
        store.save_path_quality("1-ff00:0:110", {"p3": {"state": "up"}})
        assert store.load_path_quality("1-ff00:0:110") == {"p3": {"state": "up"}}
        assert sorted(store.path_quality_destinations()) == ["1-ff00:0:110", "1-ff00:0:111"]
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            store.save_path_quality("1-ff00:0:110", {"p": {"x": object()}})
    with StateStore.open(tmp_path) as store:
        assert store.load_path_quality("1-ff00:0:110") == {"p3": {"state": "up"}}


def test_counters_add_up_across_reopen(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        assert store.counters() == {}
        store.add_counters({"packets.rx": 10, "bytes.rx": 15000})
        store.add_counters({"packets.rx": 5, "failovers": 1})
        store.add_counters({})
    with StateStore.open(tmp_path) as store:
        assert store.counters() == {"packets.rx": 15, "bytes.rx": 15000, "failovers": 1}
        with pytest.raises(TypeError, match="must be an int"):
            store.add_counters({"x": 1.5})  # type: ignore[dict-item]
        with pytest.raises(OverflowError):
            store.add_counters({"packets.rx": 2**63})
        assert store.counters()["packets.rx"] == 15  # a refused batch changes nothing


@settings(max_examples=30, deadline=None)
@given(batches=st.lists(st.dictionaries(st.sampled_from("abcde"), st.integers(0, 2**40), max_size=5)))
def test_counters_equal_the_sum_of_deltas(tmp_path_factory: pytest.TempPathFactory, batches: list) -> None:
    expected: dict[str, int] = {}
    with StateStore.open(tmp_path_factory.mktemp("ctr")) as store:
        for deltas in batches:
            store.add_counters(deltas)
            for k, v in deltas.items():
                expected[k] = expected.get(k, 0) + v
        assert store.counters() == expected


def test_namespaces_do_not_collide(tmp_path: Path) -> None:
    with StateStore.open(tmp_path) as store:
        store.add_counters({"pq/1-ff00:0:110": 7})
        store.save_path_quality("ctr/x", {"a": {}})
        assert store.counters() == {"pq/1-ff00:0:110": 7}
        assert store.path_quality_destinations() == ["ctr/x"]


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.counters()


# -- opening problems, each an OperatorError naming the path and the fix ------------------------------


def test_second_open_in_same_process_names_the_lock(tmp_path: Path) -> None:
    with StateStore.open(tmp_path), pytest.raises(StateError) as info:
        StateStore.open(tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, OperatorError)
    assert str(tmp_path / state.STORE_NAME) in msg
    assert "another running scion-appliance" in msg and "systemctl stop scion-appliance" in msg


def test_open_held_by_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StateError, match="in use by another running scion-appliance"):
            StateStore.open(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone (even killed), the lock is free again
    with StateStore.open(tmp_path) as store:
        assert store.counters() == {"held": 1}


HOLDER = textwrap.dedent(
    """
    import sys, time
    from scion_appliance.state import StateStore
    s = StateStore.open(sys.argv[1])
    s.add_counters({"held": 1})
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="a file is in the way"):
        StateStore.open(tmp_path / "file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / state.STORE_NAME).write_text("x")
    with pytest.raises(
        StateError, match=f"state store {tmp_path / 'd' / state.STORE_NAME}.*file is in the way"
    ):
        StateStore.open(tmp_path / "d")


def test_damaged_store_says_move_it_aside(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    (tmp_path / state.STORE_NAME / "CURRENT").write_text("garbage\n")
    with pytest.raises(StateError, match=r"is damaged .*mv .*\.broken"):
        StateStore.open(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_state_dir_says_chown(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StateError, match=r"permission denied|Permission denied"):
        StateStore.open(locked / "lib")


def test_permission_message_names_path_and_fix() -> None:
    # Root (as CI runs) ignores modes, so this checks the mapping of RocksDB's status text directly.
    err = state._explain_open_failure(
        Path("/var/lib/scion-appliance/state.rocksdb"),
        Exception(
            "IO error: While open a file for appending: /var/lib/scion-appliance/state.rocksdb/"
            "000011.log: Permission denied"
        ),
    )
    assert "permission denied" in str(err)
    assert "chown -R scion-appliance: /var/lib/scion-appliance" in str(err)


def _raw_put(tmp_path: Path, items: dict[bytes, bytes]) -> None:
    db = Rdict(str(tmp_path / state.STORE_NAME), options=Options(raw_mode=True))
    batch = WriteBatch(raw_mode=True)
    for k, v in items.items():
        batch.put(k, v)
    db.write(batch)
    db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path).close()
    _raw_put(tmp_path, {state.META_SCHEMA: b"99"})
    with pytest.raises(
        StateError, match=r"schema version 99, newer than this scion-appliance understands \(1\)"
    ):
        StateStore.open(tmp_path)


def test_foreign_store_without_version_is_refused(tmp_path: Path) -> None:
    _raw_put(tmp_path, {b"something": b"else"})
    with pytest.raises(StateError, match="not a scion-appliance state store"):
        StateStore.open(tmp_path)


def test_older_schema_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pretend version 0 -> 1 step: proves migrations run in order, in one batch, and bump the version.
    StateStore.open(tmp_path).close()
    _raw_put(tmp_path, {state.META_SCHEMA: b"0", b"old/counter": b"\x05"})

    def step(db: Rdict, batch: WriteBatch) -> None:
        batch.put(state.PREFIX_COUNTER + b"migrated", state._I64.pack(db[b"old/counter"][0]))
        batch.delete(b"old/counter")

    monkeypatch.setitem(state.MIGRATIONS, 0, step)
    with StateStore.open(tmp_path) as store:
        assert store.schema_version == 1
        assert store.counters() == {"migrated": 5}
    monkeypatch.delitem(state.MIGRATIONS, 0)
    _raw_put(tmp_path, {state.META_SCHEMA: b"0"})
    with pytest.raises(StateError, match="cannot migrate"):
        StateStore.open(tmp_path)


# -- crash safety --------------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys
    from rocksdict import WriteBatch
    from scion_appliance.state import StateStore

    state_dir, progress = sys.argv[1], sys.argv[2]
    store = StateStore.open(state_dir)
    peer = bytes(32)
    last = store.get_handshake_timestamp(peer)
    i = int.from_bytes(last, "big") if last else 0
    out = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(out, b"ready\\n")
    while True:
        i += 1
        store.add_counters({"a": 1, "b": 2, "c": 3})
        store.save_path_quality("1-ff00:0:110", {f"p{j}": {"gen": i, "rtt": j} for j in range(16)})
        batch = WriteBatch(raw_mode=True)
        for j in range(64):
            batch.put(b"t/%03d" % j, i.to_bytes(8, "big") * 8)
        store._write(batch)
        store.set_handshake_timestamp(peer, i.to_bytes(12, "big"))
        os.write(out, b"%d\\n" % i)
    """
)


def _check_store_after_crash(state_dir: Path, acked: int, acked_total: int) -> tuple[int, int]:
    """Open the store the killed worker left; every batch must be whole; acknowledged writes are there."""
    with StateStore.open(state_dir) as store:
        mark = store.get_handshake_timestamp(bytes(32))
        last = int.from_bytes(mark, "big") if mark else 0
        assert last >= acked, "a handshake mark acknowledged before the kill was lost"
        ctr = store.counters()
        a = ctr.get("a", 0)
        assert ctr.get("b", 0) == 2 * a and ctr.get("c", 0) == 3 * a, f"torn counter batch: {ctr}"
        assert a >= acked_total, "counters acknowledged before the kill were lost"
        pq = store.load_path_quality("1-ff00:0:110")
        if pq:
            assert len(pq) == 16 and len({r["gen"] for r in pq.values()}) == 1, f"torn path record: {pq}"
        raw = store._require()
        values = {raw.get(b"t/%03d" % j) for j in range(64)}
        assert len(values) == 1, "torn 64-key batch"
        return last, a


def _crash_runs(tmp_path: Path, kills: int) -> None:
    rng = random.Random(os.environ.get("SCION_CRASH_SEED", "state"))
    state_dir = tmp_path / "lib"
    progress = tmp_path / "progress"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    acked_total = 0
    for _ in range(kills):
        progress.write_text("")
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(state_dir), str(progress)], env=env)
        try:
            deadline = time.monotonic() + 20
            while "ready" not in progress.read_text():
                assert worker.poll() is None, "worker exited before it was ready"
                assert time.monotonic() < deadline, "worker never became ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.02, 0.4))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        done = [line for line in progress.read_text().splitlines()[1:] if line]
        acked = int(done[-1]) if done else 0
        # every loop iteration that printed its number did one add_counters before it
        acked_total += len(done)
        _, a = _check_store_after_crash(state_dir, acked, acked_total)
        acked_total = a


def test_kill_9_leaves_every_batch_whole(tmp_path: Path) -> None:
    _crash_runs(tmp_path, kills=4)


@pytest.mark.slow
def test_kill_9_many_times(tmp_path: Path) -> None:
    _crash_runs(tmp_path, kills=25)
