"""`soundmond listen` against a REAL Mosquitto: dedup by event_id, shared subscriptions split a stream."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import samples
from mqtt_rig import Broker, child_env, free_port, mosquitto_available, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from soundmond.config import StationConfig
from soundmond.data import Alert, AlertType
from soundmond.errors import ExitCode
from soundmond.outputs import messages
from soundmond.outputs.listen import Listener, SeenIds, add_listen_arguments, format_line, listen_config

pytestmark = pytest.mark.skipif(mosquitto_available() is not None, reason=str(mosquitto_available()))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_listen_arguments(p)
    return p.parse_args(list(argv))


class Running:
    def __init__(self, port: int, *argv: str) -> None:
        args = parse("--host", "127.0.0.1", "--port", str(port), *argv)
        self.out = io.StringIO()
        self.stop = threading.Event()
        self.listener = Listener(args, listen_config(args), self.out, self.stop)
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.listener.subscribed.wait(10)

    def _run(self) -> None:
        self.rc = self.listener.run()

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive() and self.rc == 0


def alert(i: int, station: str = "st-a") -> dict[str, object]:
    return messages.alert_payload(Alert(AlertType.RARE_SPECIES, f"k{i}", "warning", 1.7e9 + i, f"alert {i}"),
                                  StationConfig(id=station))


def publish_all(port: int, items: list[tuple[str, dict[str, object]]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(t, messages.encode(p), qos=1) for t, p in items]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_duplicates_printed_once_from_many_stations(broker: Broker) -> None:
    a1, a2, b1 = alert(1), alert(2), alert(3, "st-b")
    span = samples.span(60, 10, {"natural": 0.7, "industrial": 0.2, "other": 0.1}, {"Turdus merula": 4}, ts=1.7e9)
    scape = messages.soundscape_payload(samples.snapshot(1.7e9, span), StationConfig(id="st-b"), ts_unix_s=1.7e9)
    listener = Running(broker.port, "--validate")
    try:
        publish_all(broker.port, [("soundmond/st-a/alerts", a1), ("soundmond/st-a/alerts", a1),
                                  ("soundmond/st-a/alerts", a2), ("soundmond/st-b/alerts", b1),
                                  ("soundmond/st-b/soundscape", scape), ("soundmond/st-b/soundscape", scape),
                                  ("soundmond/st-a/detections", alert(9))])  # not subscribed by default
        assert wait_until(lambda: len(listener.lines()) >= 4 and listener.listener.duplicates == 2, 5)
    finally:
        listener.close()
    lines = listener.lines()
    assert len(lines) == 4, lines
    assert "st-a ALERT WARNING RARE_SPECIES: alert 1" in lines[0]
    assert any("SOUNDSCAPE 60s: natural 70% industrial 20% other 10% (10 windows) [Turdus merula 4]" in ln
               for ln in lines)
    assert listener.listener.invalid == 0


def test_json_lines_and_shared_subscription_split(broker: Broker) -> None:
    one = Running(broker.port, "--json", "--share", "g", "--topic", "soundmond/+/alerts")
    two = Running(broker.port, "--json", "--share", "g", "--topic", "soundmond/+/alerts")
    try:
        sent = [alert(i) for i in range(60)]
        publish_all(broker.port, [("soundmond/st-a/alerts", p) for p in sent])
        assert wait_until(lambda: len(one.lines()) + len(two.lines()) >= 60, 10)
    finally:
        one.close()
        two.close()
    got = [json.loads(ln) for ln in one.lines() + two.lines()]
    assert {g["payload"]["event_id"] for g in got} == {p["event_id"] for p in sent}
    assert len(got) == 60  # each message went to exactly one member of the group
    assert one.lines() and two.lines(), (len(one.lines()), len(two.lines()))
    assert all(g["topic"] == "soundmond/st-a/alerts" for g in got)


def test_count_ends_the_run_and_hostile_payloads_do_not_crash(broker: Broker) -> None:
    listener = Running(broker.port, "--count", "2", "--topic", "x/#")
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for payload in (b"\xff\xfe", b"[1,2", b"x" * 2_000_000, b"online"):
        c.publish("x/y", payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    listener.thread.join(10)
    assert not listener.thread.is_alive() and listener.rc == 0
    assert len(listener.lines()) == 2 and listener.lines()[-1] == "x/y: [1,2"


def test_seen_ids_is_bounded_lru() -> None:
    s = SeenIds(3)
    assert [s.seen(x) for x in "abca"] == [False, False, False, True]
    s.seen("d")  # evicts b (a was refreshed)
    assert len(s) == 3 and not s.seen("b") and s.seen("a")


def test_format_line_status_and_unknown() -> None:
    assert format_line("t", [1]) == "t: [1]"
    assert "HEARTBEAT" in format_line("t", {"type": "heartbeat", "ts": "x", "station_id": "s", "uptime_s": 1})
    written = {"type": "evidence", "ts": "x", "station_id": "s", "status": "written", "label": "Turdus merula",
               "path": "2026-01-01/00/Turdus_merula/ab.flac", "bytes": 9, "sha256": "0123456789abcdef", "reason": None}
    assert format_line("t", written) == ("x s EVIDENCE WRITTEN Turdus merula 2026-01-01/00/Turdus_merula/ab.flac "
                                         "(9 bytes sha256 0123456789ab)")
    assert format_line("t", {**written, "status": "skipped", "reason": "speech"}).endswith("ab.flac (speech)")


def listen_cli(port: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soundmond.cli", "listen", "--host", "127.0.0.1", "--port", str(port),
                           "--duration", "1.5", *argv], env=child_env(), capture_output=True, text=True, timeout=60)


def test_exit_code_says_whether_it_ever_connected(tmp_path: Path) -> None:
    nobody = free_port()
    dead = listen_cli(nobody)
    assert dead.returncode == ExitCode.FATAL, dead.stderr
    assert f"soundmond listen: never connected to 127.0.0.1:{nobody} (cannot connect:" in dead.stderr
    assert dead.stdout == ""
    with Broker(tmp_path / "locked", users={"station": "pw"}) as locked:
        refused = listen_cli(locked.port)
    assert refused.returncode == ExitCode.FATAL, refused.stderr
    assert "never connected" in refused.stderr and "the broker refused the connection: Not authorized" in refused.stderr
    with Broker(tmp_path / "open") as broker:
        ok = listen_cli(broker.port)
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert "never connected" not in ok.stderr
    helptext = subprocess.run([sys.executable, "-m", "soundmond.cli", "listen", "--help"], env=child_env(),
                              capture_output=True, text=True, timeout=60).stdout
    assert "exit codes of listen:" in helptext and "5  it never connected to the broker" in helptext


def test_validate_without_jsonschema_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from soundmond.outputs import listen

    monkeypatch.setattr(listen, "find_spec", lambda name: None if name == "jsonschema" else object())
    out = io.StringIO()
    code = listen.run_listen(parse("--host", "127.0.0.1", "--port", "1", "--validate", "--duration", "1"), out)
    assert code == ExitCode.USAGE and out.getvalue() == ""
    err = capsys.readouterr().err
    assert "--validate needs jsonschema" in err and "pip install" in err and "Traceback" not in err
