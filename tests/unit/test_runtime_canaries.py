"""Canaries for the runtime's seams: each drives Faust's own code path that should reach a
replaced method, and fails when Faust stops calling it (not only when the attribute is not
ours); and the version fence refuses an unaudited Faust, in-process and in a worker process."""
from __future__ import annotations

import asyncio
import configparser
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import faust
import pytest
from faust.transport.consumer import Consumer, Fetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP
from intervaltree import IntervalTree

from payflow import runtime
from payflow.runtime import commit_offsets, fetch, monitor, seams, worker
from payflow.settings import ROOT

runtime.install(shutdown_seconds=30.0)  # what payflow.app does; idempotent

RAW = TP("canary-raw", 0)


# -- fetch: Faust's Fetcher runs Consumer._drain_messages -------------------------------------
class FetchStub(AIOKafkaDriverConsumer):
    """Faust's aiokafka Consumer with just what drain_messages reads (no transport, no thread)."""

    def __init__(self, app, records):
        self.app = app
        self.records = records
        self.calls = 0
        self._stopped = asyncio.Event()
        self._read_offset = {RAW: None}
        self._buffered_partitions = set()
        self._commit_every = None
        self._n_acked = 0
        self.suspend_flow = asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)

    @property
    def flow_active(self):
        return True

    @property
    def should_stop(self):
        return False

    def assignment(self):
        return {RAW}

    async def _wait_next_records(self, timeout):
        self.calls += 1
        if self.calls > 1:  # one fetch, then the loop ends
            self._stopped.set()
            return None, None
        return {RAW: self.records}, {RAW}

    async def sleep(self, seconds):
        await asyncio.sleep(0)

    def _to_message(self, tp, record):
        return SimpleNamespace(tp=tp, offset=record.offset, generation_id=1, tracked=False)

    def highwater(self, tp):
        return 100


class Route:
    def __init__(self):
        self.messages = []

    def full(self):
        return False

    def put_many(self, messages):
        self.messages.extend(messages)
        return len(messages)

    async def wait_for_space(self):
        pass

    def lowest_offset(self, partition):
        offsets = [m.offset for m in self.messages if m.tp.partition == partition]
        return min(offsets) if offsets else None


async def test_faust_s_fetcher_drains_through_payflow_s_whole_fetch_delivery():
    app = SimpleNamespace(consumer_generation_id=1, flow_control=SimpleNamespace(is_active=lambda: True),
                          monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
                          topics=SimpleNamespace(acks_enabled_for=lambda topic: True), rebalancing=False,
                          should_stop=False)
    consumer = app.consumer = FetchStub(app, [SimpleNamespace(offset=o) for o in (5, 6, 7)])
    fetcher = Fetcher(app)
    route = Route()
    fetch.route(RAW.topic, route)
    try:
        # Faust's own task (a mode ServiceTask, called with its service): Fetcher._fetcher
        # awaits app.consumer._drain_messages(fetcher)
        await asyncio.wait_for(Fetcher._fetcher(fetcher), 5)
    finally:
        fetch.unroute(RAW.topic, route)
    # the records reached the route a fetch at a time: only payflow's drain_messages does that
    assert [m.offset for m in route.messages] == [5, 6, 7]
    assert consumer._read_offset[RAW] == 7
    assert Consumer._drain_messages is fetch.drain_messages


# -- seek: Faust's Consumer.seek reaches the consumer thread through ThreadDelegateConsumer._seek
async def test_faust_s_seek_is_counted_and_runs_in_the_consumer_thread():
    calls = []

    class Thread:
        def seek(self, partition, offset):
            calls.append(("seek", partition, offset))

        async def call_thread(self, fun, *args, **kwargs):
            calls.append("call_thread")
            return await fun(*args, **kwargs)

    consumer = object.__new__(AIOKafkaDriverConsumer)
    consumer._thread = Thread()
    consumer._read_offset = {}
    consumer.log = SimpleNamespace(dev=lambda *a, **k: None)
    consumer.app = SimpleNamespace(consumer_generation_id=1)
    seeks = fetch._seeks
    await Consumer.seek(consumer, RAW, 12)  # Faust's entry point: seek -> _seek -> the thread
    assert calls == ["call_thread", ("seek", RAW, 12)]
    assert fetch.sought_since(RAW, seeks) and consumer._read_offset[RAW] == 12


# -- commit: Consumer._filter_committable_offsets computes commits with _new_offset ----------
class CommitStub(AIOKafkaDriverConsumer):
    def __init__(self, committed, acked):
        self._committed_offset = {RAW: committed}
        self._acked = {RAW: list(acked)}
        self._acked_index = {RAW: set(acked)}
        self._gap = {RAW: IntervalTree()}

    def _should_commit(self, tp, offset):
        return True


def test_faust_s_commit_computation_runs_the_fixed_new_offset():
    # acked 101.. with 100 (the next to commit) never acked: Faust's own _new_offset commits
    # over 100; through Faust's _filter_committable_offsets, ours must refuse
    assert seams.original(Consumer, "_new_offset")(CommitStub(100, range(101, 110)), RAW) == 110
    assert Consumer._filter_committable_offsets(CommitStub(100, range(101, 110)), [RAW]) == {}
    assert Consumer._filter_committable_offsets(CommitStub(100, range(100, 110)), [RAW]) == {RAW: 110}


# -- worker: the consumer thread builds its consumer with _create_worker_consumer ------------
async def test_the_consumer_thread_builds_a_read_committed_consumer():
    app = faust.App("runtime-canary", broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False)
    thread = app.consumer._thread  # noqa: SLF001 - Faust's consumer thread, not started
    assert isinstance(thread, AIOKafkaConsumerThread)
    # Faust's own factory (what the thread's on_start calls) reaches our replacement
    consumer = thread._create_consumer(asyncio.get_running_loop())  # noqa: SLF001
    assert consumer._isolation_level == "read_committed"  # noqa: SLF001
    assert app.conf.processing_guarantee.value == "at_least_once"  # Faust alone would read uncommitted


# -- monitor: Faust's livelock detector verifies each partition via the thread ---------------
class ThreadStub(AIOKafkaConsumerThread):
    def __init__(self):
        self.fetch_checks = []

    def _verify_aiokafka_event_path(self, now, tp):
        self.fetch_checks.append(tp)
        return False

    @property
    def consumer(self):
        raise AssertionError("Faust's stream and commit checks ran for a routed partition")


async def test_faust_s_partition_check_skips_the_stream_checks_of_routed_partitions():
    stub = SimpleNamespace(_thread=ThreadStub(), should_stop=False, assignment=lambda: {RAW},
                           sleep=lambda s: asyncio.sleep(0))
    route = Route()
    fetch.route(RAW.topic, route)
    try:
        # Faust's detector: Consumer.verify_all_partitions_active -> verify_event_path -> thread's
        stub.verify_event_path = lambda now, tp: AIOKafkaDriverConsumer.verify_event_path(stub, now, tp)
        await Consumer.verify_all_partitions_active(stub)
    finally:
        fetch.unroute(RAW.topic, route)
    assert stub._thread.fetch_checks == [RAW]  # the fetch-request check still runs
    with pytest.raises(AssertionError, match="stream and commit checks ran"):  # unrouted: Faust's own
        AIOKafkaDriverConsumer.verify_event_path(stub, 0.0, RAW)


def test_the_lean_monitor_feeds_faust_s_detector_for_streams():
    lean = monitor.LeanMonitor()
    lean.on_stream_event_in(RAW, 3, None, None)
    assert RAW in lean.stream_inbound_time


# -- take: Faust's stream hands each event to the processors take_batches adds ---------------
take_app = faust.App("runtime-canary-take", store="memory://", autodiscover=False)
taken: list = []


@take_app.agent(take_app.channel())
async def taker(stream):
    from payflow.runtime.take import take_batches
    async for batch in take_batches(stream, 10, within=0.05):
        taken.extend(batch)


async def test_faust_s_stream_delivers_to_the_take_buffer():
    taken.clear()
    async with taker.test_context() as agent:
        for i in range(3):
            await agent.put(i)
        for _ in range(100):
            if len(taken) >= 3:
                break
            await asyncio.sleep(0.02)
    assert len(taken) == 3


# -- the fence ---------------------------------------------------------------------------------
def test_every_seam_is_installed_through_replace():
    import faust.worker
    from faust.transport.consumer import ThreadDelegateConsumer
    for cls, name in [(Consumer, "_drain_messages"), (Consumer, "_new_offset"), (Consumer, "perform_seek"),
                      (Consumer, "seek"), (ThreadDelegateConsumer, "_seek"),
                      (AIOKafkaConsumerThread, "_create_worker_consumer"),
                      (AIOKafkaConsumerThread, "verify_event_path"),
                      (faust.worker.Worker, "_on_sigterm"), (faust.worker.Worker, "_on_sigint"),
                      (faust.App, "_on_rebalance_when_stopped"), (Consumer, "on_partitions_revoked")]:
        assert seams.installed(cls, name), (cls, name)
        assert seams.original(cls, name) is not getattr(cls, name)


def test_replace_keeps_the_original_and_refuses_a_missing_method():
    class Library:
        def method(self):
            return "library"

    def ours(self):
        return "payflow, then " + seams.original(Library, "method")(self)

    assert seams.replace(Library, "method", ours)(Library()) == "library"
    assert Library().method() == "payflow, then library"
    seams.replace(Library, "method", ours)  # again: nothing changes
    assert Library().method() == "payflow, then library"
    with pytest.raises(seams.MissingSeam, match="Library.gone is gone.*re-audited"):
        seams.replace(Library, "gone", ours)
    assert not hasattr(Library, "gone")


def test_the_audited_versions_are_installed_allowed_by_setup_cfg_and_locked():
    """The fence names exact versions: setup.cfg must allow them and the lock files pin them."""
    from packaging.requirements import Requirement

    seams.check_versions()  # the venv runs what was audited
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    requirements = {}
    for line in parser["options"]["install_requires"].splitlines():
        if line.strip() and not line.strip().startswith("#"):
            requirement = Requirement(line.strip())
            requirements[requirement.name.lower()] = requirement
    locks = sorted((ROOT / "requirements").glob("lock*.txt"))
    for dist, version in seams.AUDITED_VERSIONS.items():
        assert version in requirements[dist].specifier, (dist, version, str(requirements[dist]))
        for lock in locks:
            pinned = [line.split("==")[1].split()[0] for line in lock.read_text().splitlines()
                      if line.lower().startswith(dist + "==")]
            assert pinned in ([], [version]), (lock.name, dist, pinned, version)


def test_an_unexpected_faust_version_is_refused_with_the_versions_and_the_files(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda dist: "0.16.0" if dist == "faust-streaming" else real(dist))
    with pytest.raises(runtime.UnauditedVersion) as refused:
        runtime.install(shutdown_seconds=30.0)
    message = str(refused.value)
    assert "faust-streaming 0.16.0 is installed" in message and "written against 0.15.3" in message
    assert "payflow/runtime/" in message and "fetch.py" in message


SITECUSTOMIZE = textwrap.dedent("""
    import importlib.metadata
    _real = importlib.metadata.version
    importlib.metadata.version = lambda dist: "0.99.0" if dist == "faust-streaming" else _real(dist)
""")


@pytest.mark.parametrize("command", [["-c", "import payflow.app"], ["-m", "payflow.cli", "worker"],
                                     ["-m", "payflow.cli", "audit", "pci"], ["-m", "payflow.cli", "reconcile"],
                                     ["-m", "payflow.demo"], ["-m", "payflow.fraudeval.run"], ["-m", "payflow.bench"]])
def test_the_worker_and_every_command_refuse_to_start_on_an_unexpected_faust(tmp_path, command):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PAYFLOW_DATA_DIR": str(tmp_path / "data"),
           "PAYFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PAYFLOW_HMAC_KEYS": "test-1:" + "5a" * 32}
    done = subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "faust-streaming 0.99.0 is installed" in done.stderr, done.stderr[-2000:]
    assert "re-audit payflow/runtime/" in done.stderr
    assert not (tmp_path / "data" / "worker.running").exists()


def test_worker_seams_are_module_functions_so_a_second_install_is_a_no_op():
    worker.install(30.0)
    commit_offsets.install()
    assert AIOKafkaConsumerThread._create_worker_consumer is worker.create_read_committed_consumer


def test_the_refusal_names_files_that_exist():
    import re
    for dist, where in seams.RE_AUDIT.items():
        for name in re.findall(r"[\w/]+\.py", where):
            assert (ROOT / name).exists() or (ROOT / "payflow/runtime" / name).exists(), (dist, name)


def test_faust_builds_the_state_tables_changelog_through_the_replaced_hook():
    """tables/: the changelog is deleted by retention, not compacted, because Faust still
    asks `_new_changelog_topic` for it (payflow/runtime/tables.py)."""
    import faust

    from payflow.tables.changelog import BatchLoggedTable

    canary_app = faust.App("canary-changelog-hook", store="memory://", autodiscover=False)
    table = BatchLoggedTable(canary_app, name="canary", key_type=bytes, value_type=bytes, partitions=2,
                             retention_seconds=7200)
    topic = table.changelog_topic
    assert topic.deleting is True and not topic.compacting
    assert topic.retention is not None and float(topic.retention.total_seconds() if hasattr(topic.retention, "total_seconds") else topic.retention) == 7200


# -- worker: mode's signal installation reaches the replaced SIGTERM and SIGINT handlers --------
def test_mode_s_signal_installation_registers_the_replaced_handlers():
    import signal

    import faust.worker

    class Installing:
        """What mode's Worker._install_signal_handlers_unix reads of the worker."""
        _on_sigint = faust.worker.Worker._on_sigint
        _on_sigterm = faust.worker.Worker._on_sigterm

        def _on_sigusr1(self) -> None:
            pass

        def _on_sigusr2(self) -> None:
            pass

    loop = asyncio.new_event_loop()
    probe = Installing()
    probe.loop = loop
    try:
        faust.worker.Worker._install_signal_handlers_unix(probe)  # noqa: SLF001 - mode's own installer
        handlers = loop._signal_handlers  # noqa: SLF001 - asyncio's registry of add_signal_handler
        assert handlers[signal.SIGTERM]._callback.__func__ is worker.on_sigterm_with_watchdog  # noqa: SLF001
        assert handlers[signal.SIGINT]._callback.__func__ is worker.on_sigint_with_watchdog  # noqa: SLF001
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(signum)
        loop.close()


# -- worker: a rebalance during the stop ----------------------------------------------------------
async def test_faust_s_rebalance_handlers_during_a_stop_leave_the_consumer_to_aiokafka():
    """Faust's revocation and assignment handlers, once the app is stopping, call
    _on_rebalance_when_stopped; Faust's own closes the aiokafka consumer from the app's loop
    (the stop then never left the group, and its final commit could retry for ever)."""
    closed = []

    class Stopping:
        """What Faust's rebalance handlers read of a stopping app."""
        should_stop = True
        consumer = SimpleNamespace(close=lambda: closed.append(True))
        _on_rebalance_when_stopped = faust.App._on_rebalance_when_stopped

    probe = Stopping()
    await faust.App._on_partitions_revoked(probe, {RAW})  # noqa: SLF001 - Faust's own handlers
    await faust.App._on_partitions_assigned(probe, {RAW})  # noqa: SLF001
    assert closed == []
    assert faust.App._on_rebalance_when_stopped is worker.rebalance_while_stopping_left_to_aiokafka  # noqa: SLF001
    seams.original(faust.App, "_on_rebalance_when_stopped")(probe)  # Faust's: closes it
    assert closed == [True]


# -- commit_offsets: a revocation commits what is acked first --------------------------------------
async def test_faust_s_thread_delegate_hands_a_revocation_to_the_commit_first():
    """The consumer thread's rebalance listener reaches the app's loop through
    ThreadDelegateConsumer.threadsafe_partitions_revoked, which queues the consumer's
    on_partitions_revoked (tests/unit/test_commit_cancelled.py runs the replacement)."""
    from faust.transport.consumer import ThreadDelegateConsumer
    queued = []

    class MethodQueue:
        async def call(self, promise, fun, *args):
            queued.append((getattr(fun, "__func__", fun), args))
            promise.set_result(None)
            return promise

    class Delegating:
        _method_queue = MethodQueue()
        on_partitions_revoked = Consumer.on_partitions_revoked

    await ThreadDelegateConsumer.threadsafe_partitions_revoked(Delegating(), asyncio.get_running_loop(), {RAW})
    assert queued == [(commit_offsets.commit_before_revocation, ({RAW},))]


# -- commit_offsets: Faust's recovery calls perform_seek ------------------------------------------
def test_faust_s_recovery_still_calls_the_consumer_s_perform_seek():
    """Faust calls perform_seek from its table recovery, after an assignment, which needs a
    broker: here its source is checked to still call it; the fault tests drive it for real
    (tests/fault/test_start_race.py: a partition with nothing committed is read from its
    first offset only through this seam)."""
    import inspect

    import faust.tables.recovery

    source = inspect.getsource(faust.tables.recovery.Recovery)
    assert source.count("consumer.perform_seek()") >= 2
