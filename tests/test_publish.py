"""The MQTT publisher against a REAL Mosquitto (tests/mqtt_rig.py): outbox at least once across broker kills and
publisher kills, status/last will, TLS + password errors, HA discovery, hostile incoming messages."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import samples
from mqtt_rig import (
    Broker,
    Collector,
    Received,
    child_env,
    free_port,
    make_tls,
    mosquitto_available,
    publisher_command,
    wait_until,
)

from soundmond.config import MqttConfig, StationConfig, StoreConfig, TlsConfig
from soundmond.data import Alert, AlertType, GroupPrediction, LabelScore, SpeciesScore, WindowResult
from soundmond.outputs import messages
from soundmond.outputs.commands import MAX_COMMAND_BYTES, read_incoming
from soundmond.outputs.publish import MqttPublisher
from soundmond.outputs.resend import ResendWindow
from soundmond.outputs.store import OutboxItem, OutboxRow, Store

pytestmark = pytest.mark.skipif(mosquitto_available() is not None, reason=str(mosquitto_available()))

STATION = StationConfig(id="st-1", latitude=46.5, longitude=6.1)


def outbox_items(n: int, station: StationConfig = STATION, start: int = 0) -> list[OutboxItem]:
    items = []
    for i in range(start, start + n):
        if i % 5 == 0:
            a = Alert(AlertType.RARE_SPECIES, f"RARE_SPECIES:{i}", "warning", 1.7e9 + i, f"alert {i}", {"n": i})
            p = messages.alert_payload(a, station)
            items.append(OutboxItem("alert", p["event_id"], p))
        else:
            p = messages.detection_payload(
                SpeciesScore("Turdus merula", "Eurasian Blackbird", 0.9),
                station,
                window_id=f"w{i}",
                ts_unix_s=1.7e9 + i,
            )
            items.append(OutboxItem("detection", p["event_id"], p))
    return items


def stored_event_ids(store: Store) -> set[str]:
    return {r[0] for r in store._query("SELECT event_id FROM outbox")}


def event_ids(msgs: list[Received]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in msgs]


def mqtt_config(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(enabled=True, host="127.0.0.1", port=port, reconnect_min_s=0.1, reconnect_max_s=0.5)
    base.update(kw)
    return MqttConfig(**base)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db", StoreConfig())
    yield s
    s.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


class Running:
    """A publisher thread stopped (and checked to end) at teardown."""

    def __init__(self, config: MqttConfig, store: Any, station: StationConfig = STATION, **kw: Any) -> None:
        self.stop = threading.Event()
        self.pub = MqttPublisher(config, station, store, self.stop, **kw)
        self.pub.start()

    def __enter__(self) -> MqttPublisher:
        return self.pub

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.pub.join(15), "publisher thread did not end"


def window_result() -> WindowResult:
    return WindowResult(
        "w-direct",
        "mic:default",
        1.7e9,
        0.0,
        5.0,
        GroupPrediction("natural", {"natural": 0.7, "industrial": 0.2, "other": 0.1}),
        (LabelScore("Bird", 0.8),),
        0.8,
        (),
        0.1,
        -30.0,
        0.0,
        50.0,
    )


def test_outbox_status_state_messages_and_discovery(broker: Broker, store: Store) -> None:
    store.write_batch([], [], outbox_items(50))
    cfg = mqtt_config(broker.port, home_assistant_discovery=True, publish_windows=True)
    with Collector(broker.port, ["soundmond/#", "homeassistant/#"]) as sub, Running(cfg, store) as pub:
        assert wait_until(lambda: pub.state().published == 50, 10), pub.state()
        assert wait_until(lambda: len(sub.on("homeassistant/sensor/#")) >= 5, 5)
        s = pub.state()
        assert s.connected and s.last_error is None and s.in_flight == 0 and s.connects == 1
        assert store.outbox_counts().pending == 0
        snapshot = samples.snapshot(1.7e9, samples.span(60, 12, {"natural": 0.5, "industrial": 0.4, "other": 0.1},
                                                        {"Turdus merula": 2}, ts=1.7e9))
        assert pub.publish_soundscape(snapshot)
        assert pub.publish_heartbeat(samples.heartbeat(uptime_s=3.0, rtf=0.1))
        assert pub.publish_window(window_result())
        assert sub.wait_for(
            lambda ms: (
                {"soundmond/st-1/soundscape", "soundmond/st-1/heartbeat", "soundmond/st-1/windows"}
                <= {m.topic for m in ms}
            ),
            5,
        )

        # every message under our prefix but the plain-text status matches its schema
        ours = [m for m in sub.on("soundmond/#") if m.topic != "soundmond/st-1/status"]
        for m in ours:
            messages.validate(json.loads(m.payload))
        alerts, dets = sub.on("soundmond/st-1/alerts"), sub.on("soundmond/st-1/detections")
        assert sorted(event_ids(alerts) + event_ids(dets)) == sorted(stored_event_ids(store))
        assert all(m.qos == 1 for m in alerts + dets)
        # in id order (nothing was replayed here)
        order = [r[0] for r in store._query("SELECT event_id FROM outbox ORDER BY id")]
        got = [
            e
            for m in sub.on("soundmond/st-1/+")
            if m.topic.endswith(("/alerts", "/detections"))
            for e in event_ids([m])
        ]
        assert got == order
        assert [m.payload for m in sub.on("soundmond/st-1/status")] == [b"online"]
        hb = json.loads(sub.on("soundmond/st-1/heartbeat")[-1].payload)
        assert hb["mqtt"]["published"] == 50 and hb["mqtt"]["connected"] and hb["uptime_s"] == 3.0
        scape = json.loads(sub.on("soundmond/st-1/soundscape")[-1].payload)
        assert scape["spans"][0]["species"] == [{"scientific_name": "Turdus merula", "count": 2}]

        # retained: a new subscriber sees status, soundscape, heartbeat and the discovery configs at once
        with Collector(broker.port, ["soundmond/st-1/#", "homeassistant/#"]) as late:
            assert late.wait_for(lambda ms: len([m for m in ms if m.retain]) >= 3 + 5, 5)
            assert {m.topic for m in late.messages if m.retain} >= {
                "soundmond/st-1/status",
                "soundmond/st-1/soundscape",
                "soundmond/st-1/heartbeat",
                "homeassistant/sensor/soundmond_st-1/natural_share/config",
            }
        configs = {m.topic: json.loads(m.payload) for m in sub.on("homeassistant/sensor/#")}
        assert len(configs) == 5
        assert all(c["availability_topic"] == "soundmond/st-1/status" for c in configs.values())

        # HA birth -> discovery re-sent; hostile messages are ignored and counted, the loop goes on
        n_configs = len(sub.on("homeassistant/sensor/#"))
        hostile = [
            ("homeassistant/status", b"\xff\xfe not utf-8"),
            ("homeassistant/status", b"online" * 100),
            ("homeassistant/status", b"maybe"),
            ("soundmond/st-1/set", b"{not json"),
            ("soundmond/st-1/set", b"[1, 2]"),
            ("soundmond/st-1/set", json.dumps({"command": "x" * 10000}).encode()),
            ("soundmond/st-1/set", json.dumps({"command": "self_destruct"}).encode()),
            ("homeassistant/status", b"online"),
        ]
        for topic, payload in hostile:
            sub.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: sum(pub.state().ignored.values()) == 7, 5), pub.state().ignored
        assert pub.state().ignored == {"malformed": 4, "oversized": 2, "unknown_command": 1}
        assert wait_until(lambda: len(sub.on("homeassistant/sensor/#")) == n_configs + 5, 5)
        store.write_batch([], [], outbox_items(5, start=50))
        assert wait_until(lambda: pub.state().published == 55, 5)
        assert pub.state().connected
    # clean stop: offline retained
    assert sub.wait_for(lambda ms: [m.payload for m in ms if m.topic.endswith("/status")][-1:] == [b"offline"], 5)


def test_unreachable_broker_keeps_outbox_and_drops_periodic_state(tmp_path: Path, store: Store) -> None:
    port = free_port()
    store.write_batch([], [], outbox_items(20))
    with Running(mqtt_config(port), store) as pub:
        assert wait_until(lambda: pub.state().last_error_kind == "unreachable", 5)
        s = pub.state()
        assert not s.connected and "connection refused by 127.0.0.1:" in (s.last_error or "")
        assert not pub.publish_soundscape(samples.snapshot(1.7e9))
        assert not pub.publish_heartbeat(samples.heartbeat())
        assert pub.state().dropped == {"soundscape": 1, "heartbeat": 1}
        time.sleep(0.5)
        assert store.outbox_counts().pending == 20 and pub.state().published == 0
        with Broker(tmp_path / "late", port=port), Collector(port, ["soundmond/st-1/#"]) as sub:
            assert wait_until(lambda: pub.state().published == 20, 10), pub.state()
            assert pub.state().connected and pub.state().last_error is None
            # the latest soundscape and heartbeat are re-sent on connect (retained state stays fresh)
            assert sub.wait_for(
                lambda ms: {"soundmond/st-1/soundscape", "soundmond/st-1/heartbeat"} <= {m.topic for m in ms}, 5
            )


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Any]]:
    root = tmp_path_factory.mktemp("tls")
    tls = make_tls(root / "certs")
    with Broker(root / "broker", tls=tls, users={"station": "right-pw"}) as b:
        yield b, tls


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tls_password_right_and_wrong(
    tls_broker: tuple[Broker, Any],
    tmp_path: Path,
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, tls = tls_broker
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    def attempt(password: str, ca: Path, name: str) -> Any:
        with Store(tmp_path / f"{name}.db", StoreConfig()) as st:
            st.write_batch([], [], outbox_items(10))
            monkeypatch.setenv("SOUNDMOND_MQTT_PASSWORD", password)
            cfg = mqtt_config(broker.port, protocol=protocol, username="station", tls=TlsConfig(ca_file=ca))
            with Running(cfg, st) as pub:
                wait_until(
                    lambda: pub.state().connected and pub.state().published == 10 or pub.state().last_error is not None,
                    10,
                )
                time.sleep(0.3)
                return pub.state(), st.outbox_counts().pending

    ok, ok_pending = attempt("right-pw", tls.cert, "ok")
    assert ok.connected and ok.published == 10 and ok_pending == 0

    bad_pw, bad_pw_pending = attempt("wrong-pw", tls.cert, "badpw")
    assert not bad_pw.connected and bad_pw.last_error_kind == "auth", bad_pw
    assert bad_pw_pending == 10 and bad_pw.published == 0
    assert "refused the connection" in (bad_pw.last_error or "")

    bad_ca, bad_ca_pending = attempt("right-pw", tls.wrong_ca, "badca")
    assert not bad_ca.connected and bad_ca.last_error_kind == "tls", bad_ca
    assert "certificate" in (bad_ca.last_error or "") and bad_ca_pending == 10 and bad_ca.published == 0

    assert len({ok.last_error, bad_pw.last_error, bad_ca.last_error}) == 3
    for text in (bad_pw.last_error, bad_ca.last_error):
        assert "right-pw" not in (text or "") and "wrong-pw" not in (text or "")
    assert "wrong-pw" not in caplog.text and "right-pw" not in caplog.text
    print(f"\n[{protocol}] auth: {bad_pw.last_error}\n[{protocol}] tls: {bad_ca.last_error}")


def test_broker_killed_repeatedly_nothing_lost(tmp_path: Path, store: Store) -> None:
    """300 rows written while a persistent broker is SIGKILLed and restarted 3 times; a persistent QoS 1 subscriber
    receives every stored event at least once."""
    total, kills = 300, 3
    broker = Broker(tmp_path / "broker", persistence=True).start()
    try:
        sub = Collector(
            broker.port, ["soundmond/st-1/alerts", "soundmond/st-1/detections"], client_id="verifier", persistent=True
        )
        # the broker must have saved the subscriber's session once, else a SIGKILL loses the subscription itself
        assert broker.wait_saved(time.time() - 0.01)
        written = 0
        done = threading.Event()

        def writer() -> None:
            nonlocal written
            while written < total and not done.is_set():
                store.write_batch([], [], outbox_items(5, start=written))
                written += 5
                time.sleep(0.03)

        drain_times = []
        with Running(mqtt_config(broker.port), store) as pub:
            w = threading.Thread(target=writer)
            w.start()
            try:
                for k in range(kills):
                    target = (k + 1) * total // (kills + 2)
                    assert wait_until(lambda t=target: pub.state().published >= t, 20), pub.state()  # type: ignore
                    # What the broker acknowledged (PUBACK) is the broker's to keep: Mosquitto holds messages queued
                    # for a subscriber in memory until its next autosave, so a SIGKILL right after a restart (before
                    # the verifier caught up) lost 34 acknowledged rows inside the broker (CI, 2026-12-07). Kill it
                    # only once the verifier holds everything acknowledged so far: what is lost after is soundmond's.
                    acked = {r[0] for r in store._query("SELECT event_id FROM outbox WHERE sent_unix_s IS NOT NULL")}
                    assert sub.wait_for(lambda ms, a=acked: set(event_ids(ms)) >= a, 20)  # type: ignore[misc]
                    broker.kill()
                    assert wait_until(lambda: not pub.state().connected, 5)
                    time.sleep(0.7)  # rows keep arriving in the outbox meanwhile
                    pending_at_restart = store.outbox_counts().pending
                    t0 = time.monotonic()
                    n_sub_connects = len(sub.connects)
                    broker.start()
                    assert wait_until(lambda: pub.state().connected, 10), pub.state()
                    # Mosquitto keeps messages queued for an absent subscriber in memory until its next autosave:
                    # a SIGKILL before the verifier is back would lose what the broker already acknowledged to us.
                    assert wait_until(lambda n=n_sub_connects: len(sub.connects) > n, 10)  # type: ignore[misc]
                    assert wait_until(lambda: store.outbox_counts().pending <= 5, 20)
                    drain_times.append((pending_at_restart, time.monotonic() - t0))
            finally:
                w.join(30)
                done.set()
            assert written == total
            assert wait_until(lambda: store.outbox_counts().pending == 0, 30), pub.state()
            stored = stored_event_ids(store)
            ok = sub.wait_for(lambda ms: set(event_ids(ms)) >= stored, 30)
            order = [r[0] for r in store._query("SELECT event_id FROM outbox ORDER BY id")]
            missing = [i for i, e in enumerate(order) if e not in set(event_ids(sub.messages))]
            assert ok, (f"missing rows (by position) {missing}; drains {drain_times}; sub connects {sub.connects}; "
                        f"log {broker.log_text()[-6000:]}")
            state = pub.state()
        got = event_ids(sub.messages)
        sub.close()
        assert len(stored) == total and set(got) == stored
        for m in sub.messages:
            messages.validate(json.loads(m.payload))
        print(
            f"\nbroker kills: stored={len(stored)} received={len(got)} unique={len(set(got))} "
            f"duplicates={len(got) - len(set(got))} published_acks={state.published} connects={state.connects} "
            "drain after restart (pending rows, s): " + ", ".join(f"({p}, {t:.2f})" for p, t in drain_times)
        )
    finally:
        broker.stop()


@pytest.mark.parametrize("resend_acked_s", [30.0, 0.0])
def test_rows_a_crashed_broker_acknowledged_are_published_again(tmp_path: Path, store: Store,
                                                                 resend_acked_s: float) -> None:
    """A broker that acknowledged rows and was SIGKILLed before saving them loses them (here: queued for a persistent
    subscriber that is offline, with a 1-h autosave). After the lost connection the publisher makes the rows it saw
    acknowledged in the last `mqtt.resend_acked_s` once more, so the subscriber gets every row once it is back.
    With resend off the same run loses them: the control shows the loss is real, not a test artefact."""
    topics = ["soundmond/st-1/alerts", "soundmond/st-1/detections"]
    broker = Broker(tmp_path / "broker", persistence=True, autosave_s=3600).start()
    try:
        Collector(broker.port, topics, client_id="verifier", persistent=True).close()  # subscribed, now away
        assert broker.save()  # the subscriber's session survives the kill; what is queued for it after this does not
        store.write_batch([], [], outbox_items(20))
        stored = stored_event_ids(store)
        with Running(mqtt_config(broker.port, resend_acked_s=resend_acked_s), store) as pub:
            assert wait_until(lambda: pub.state().published == 20, 10), pub.state()
            broker.kill()
            broker.start()
            assert wait_until(lambda: pub.state().connects == 2, 10), pub.state()
            if resend_acked_s:
                assert wait_until(lambda: pub.state().republished == 20, 10), pub.state()
                assert pub.state().resent == 20 and pub.state().published == 20
            assert wait_until(lambda: store.outbox_counts().pending == 0, 10), store.outbox_counts()
            with Collector(broker.port, topics, client_id="verifier", persistent=True) as sub:
                assert sub.connects and sub.connects[0][1], "the subscriber's session was not kept across the kill"
                if resend_acked_s:
                    assert sub.wait_for(lambda ms: set(event_ids(ms)) >= stored, 10), len(sub.messages)
                    assert set(event_ids(sub.messages)) == stored
                else:
                    assert not sub.wait_for(lambda ms: len(ms) > 0, 3)  # the broker lost all 20 it acknowledged
                    assert pub.state().resent == 0 and pub.state().published == 20
    finally:
        broker.stop()


def outbox_publishes(broker: Broker, client_id: str = "soundmond-st-1") -> int:
    """PUBLISH packets on the outbox topics the broker received from the publisher (needs `log_all`)."""
    return sum(p.topic.endswith(("/alerts", "/detections")) for p in broker.publishes_received(client_id))


def test_each_row_is_published_at_most_once_more_across_repeated_broker_kills(tmp_path: Path, store: Store) -> None:
    """Three broker kills after the rows were acknowledged: the first loss publishes them once more (resend window),
    the later ones do not again. Before issue 14 the re-acknowledged rows were "recent" again at every loss, so each
    kill sent all of them once more (80 packets here instead of 40)."""
    broker = Broker(tmp_path / "broker", persistence=True, log_all=True).start()
    try:
        store.write_batch([], [], outbox_items(20))
        with Running(mqtt_config(broker.port, resend_acked_s=30.0), store) as pub:
            assert wait_until(lambda: pub.state().published == 20, 10), pub.state()
            for kill in range(1, 4):
                broker.kill()
                broker.start()
                assert wait_until(lambda k=kill: pub.state().connects == k + 1, 10), pub.state()  # type: ignore
                assert wait_until(lambda: pub.state().republished == 20 and pub.state().in_flight == 0, 10)
            state = pub.state()
        assert store.outbox_counts().pending == 0
        assert (state.resent, state.republished, state.published) == (20, 20, 20)
        assert outbox_publishes(broker) == 40  # each row: once, then once more after the first loss, never again
    finally:
        broker.stop()


def row(i: int) -> OutboxRow:
    return OutboxRow(i, "detection", f"e{i}", "{}", 1, 0.0, 1)


def test_resend_window_queues_each_first_ack_once_and_stays_bounded() -> None:
    w = ResendWindow(window_s=10.0, max_rows=3)
    for i, t in ((1, 100.0), (2, 105.0), (3, 112.0)):
        w.acknowledged(row(i), t)
    assert w.lost(113.0) == 2 and len(w) == 2  # row 1 was acknowledged 13 s before the loss: outside the window
    assert [r.id for r in w.take(1)] == [2]
    # the loss of the connection that carried row 2 again: it goes back in front, once per connection; nothing new
    assert w.lost(114.0, [row(2)]) == 0 and [r.id for r in w.take(5)] == [2, 3]
    assert w.lost(115.0) == 0 and len(w) == 0  # rows published once more never come back
    for i in range(4, 9):
        w.acknowledged(row(i), 120.0)
    assert w.lost(121.0) == 3 and w.forgotten == 2  # at most max_rows remembered, the oldest forgotten
    w.put_back(w.take(2))
    assert [r.id for r in w.take(5)] == [6, 7, 8]
    off = ResendWindow(window_s=0.0)
    off.acknowledged(row(1), 1.0)
    assert off.lost(1.0) == 0  # resend_acked_s = 0: off


def test_stop_drains_rows_written_just_before_it(broker: Broker, store: Store) -> None:
    """Rows the store wrote after the publisher's last look at the outbox (a 30-s poll here) still go out when the run
    stops: the drain looks again and waits for every PUBACK before `offline`."""
    with Collector(broker.port, ["soundmond/st-1/#"]) as sub:
        running = Running(mqtt_config(broker.port), store, poll_interval_s=30.0)
        with running as pub:
            assert wait_until(lambda: pub.state().connected and pub.state().pending == 0, 10), pub.state()
            store.write_batch([], [], outbox_items(15))
        assert store.outbox_counts().pending == 0
        assert running.pub.state().published == 15
        stored = stored_event_ids(store)
        assert sub.wait_for(lambda ms: set(event_ids([m for m in ms if not m.topic.endswith("/status")])) == stored,
                            5)
        statuses = [m.payload for m in sub.messages if m.topic.endswith("/status")]
        assert statuses[-1:] == [b"offline"]


def test_stop_reconnects_during_the_drain(tmp_path: Path, store: Store) -> None:
    """The broker is down when the run stops and back within mqtt.drain_timeout_s: the drain reconnects (without
    waiting for the long reconnect backoff) and sends everything."""
    port = free_port()
    store.write_batch([], [], outbox_items(10))
    cfg = mqtt_config(port, reconnect_min_s=30.0, reconnect_max_s=60.0, drain_timeout_s=20.0)
    stop = threading.Event()
    pub = MqttPublisher(cfg, STATION, store, stop)
    pub.start()
    try:
        assert wait_until(lambda: pub.state().last_error_kind == "unreachable", 5)
        stop.set()
        with Broker(tmp_path / "late", port=port):
            assert pub.join(25), "the drain did not end"
    finally:
        stop.set()
        pub.join(25)
    assert pub.state().published == 10 and store.outbox_counts().pending == 0


def test_stop_with_an_unreachable_broker_warns_with_the_count_and_ends(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    store.write_batch([], [], outbox_items(12))  # 3 alerts, 9 detections
    stop = threading.Event()
    pub = MqttPublisher(mqtt_config(port, drain_timeout_s=1.0), STATION, store, stop)
    pub.start()
    try:
        assert wait_until(lambda: pub.state().last_error_kind == "unreachable", 5)
        stop.set()
        assert pub.join(1.0 + 10.0), "the publisher did not end after mqtt.drain_timeout_s"  # a bound, not a timing
    finally:
        stop.set()
        pub.join(15)
    assert store.outbox_counts().pending == 12  # kept for the next start
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "not acknowledged" in
                r.getMessage()]
    assert warnings == [
        f"MQTT: 12 outbox rows (3 alerts) not acknowledged within mqtt.drain_timeout_s = 1 s (unreachable: connection "
        f"refused by 127.0.0.1:{port} (is the broker running and listening on that port?)); they stay in the outbox "
        "and are published at the next start"
    ]


def _start_child(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        publisher_command(db, port), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"READY", line
    return proc


def test_publisher_process_sigkilled_mid_drain_and_last_will(tmp_path: Path, broker: Broker) -> None:
    total = 300
    db = tmp_path / "store.db"
    store = Store(db, StoreConfig())
    try:
        sub = Collector(broker.port, ["soundmond/kill-test/#"])
        written = 0

        def write(n: int) -> None:
            nonlocal written
            for _ in range(n // 5):
                store.write_batch([], [], outbox_items(5, StationConfig(id="kill-test"), start=written))
                written += 5

        write(100)
        proc = _start_child(db, broker.port)
        try:
            status = lambda: [m.payload for m in sub.on("soundmond/kill-test/status")]  # noqa: E731
            assert sub.wait_for(lambda ms: status()[-1:] == [b"online"], 10)
            # kill -9 while rows are flowing (the child drains, we keep writing)
            for round_ in range(2):
                write(60)
                want = 40 * (round_ + 1)
                wait_until(lambda n=want: len(sub.on("soundmond/kill-test/detections")) > n, 5)  # type: ignore[misc]
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                assert proc.stdout is not None
                proc.stdout.close()
                # the broker publishes the last will: offline
                assert sub.wait_for(lambda ms: status()[-1:] == [b"offline"], 10), status()
                write(20)
                proc = _start_child(db, broker.port)
                assert sub.wait_for(lambda ms: status()[-1:] == [b"online"], 10), status()
            write(total - written)
            assert written == total
            assert wait_until(lambda: store.outbox_counts().pending == 0, 30), store.outbox_counts()
            stored = stored_event_ids(store)
            data = [m for m in sub.messages if m.topic.endswith(("/alerts", "/detections"))]
            assert sub.wait_for(
                lambda ms: set(event_ids([m for m in ms if m.topic.endswith(("/alerts", "/detections"))])) >= stored, 10
            )
            data = [m for m in sub.messages if m.topic.endswith(("/alerts", "/detections"))]
            got = event_ids(data)
            assert set(got) == stored and len(stored) == total
            print(
                f"\npublisher kill -9 x2: stored={len(stored)} received={len(got)} "
                f"duplicates={len(got) - len(set(got))}"
            )
            # a clean stop says offline too (not via the will)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            assert sub.wait_for(lambda ms: status()[-1:] == [b"offline"], 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
            sub.close()
    finally:
        store.close()


@pytest.mark.parametrize(
    "topic, payload, expected",
    [
        ("homeassistant/status", b"online", ("resend_discovery", "")),
        ("homeassistant/status", b" offline\n", ("none", "")),
        ("homeassistant/status", b"maybe", ("ignored", "malformed")),
        ("homeassistant/status", b"\xff\xfe", ("ignored", "malformed")),
        ("homeassistant/status", b"online" * 20, ("ignored", "oversized")),
        ("soundmond/st-1/set", b'{"command": "republish"}', ("republish", "")),
        ("soundmond/st-1/set", b'{"command": "self_destruct"}', ("ignored", "unknown_command")),
        ("soundmond/st-1/set", b"[1, 2]", ("ignored", "malformed")),
        ("soundmond/st-1/set", b"{not json", ("ignored", "malformed")),
        ("soundmond/st-1/set", b" " * (MAX_COMMAND_BYTES + 1), ("ignored", "oversized")),
        ("soundmond/st-1/elsewhere", b"online", ("ignored", "unexpected_topic")),
    ],
)
def test_incoming_messages_are_classified(topic: str, payload: bytes, expected: tuple[str, str]) -> None:
    incoming = read_incoming(topic, payload, set_topic="soundmond/st-1/set", birth_topic="homeassistant/status")
    assert (incoming.action, incoming.reason) == expected
    assert bool(incoming.detail) == (incoming.action == "ignored")  # an ignored message says why
