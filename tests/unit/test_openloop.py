"""tests/bench/openloop.py and the overload report's arithmetic: a real generator against a real socket
server that answers 200, refuses with 503, never answers, or closes; and recovery from timestamps."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.bench import overload
from tests.bench.bench import ROOT
from tests.bench.openloop import run
from tests.bench.overload import analyse, recovery_s, verdicts
from tests.support import free_port, wait_until

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}"


class Scripted(asyncio.Protocol):
    """Answers the n-th request it receives (over all connections) by n % 10: 0-6 answer 200, 7 and 8
    answer 503, 9 is never answered (its client times out)."""

    count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = int(self.buffer[:end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            n, Scripted.count = Scripted.count, Scripted.count + 1
            if n % 10 < 7:
                self.transport.write(OK)
            elif n % 10 < 9:
                self.transport.write(REFUSED)


@pytest.fixture
def scripted_server() -> Iterator[int]:
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve() -> None:
        server = await loop.create_server(Scripted, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    task = loop.create_task(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert ready.wait(10)
    Scripted.count = 0
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(task.cancel)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_every_request_is_sent_on_schedule_and_each_outcome_is_counted(scripted_server: int) -> None:
    # The client timeout is what the never-answered requests wait; it is long enough that the
    # server's thread reads every request before its client gives up, even on a busy machine
    # (with 0.5 s, a run beside the full suite saw 141 of 150).
    timeout_s = 3.0
    url = f"http://127.0.0.1:{scripted_server}/predict"
    result = run(url, b"{}", [(200, 0.5), (100, 0.5)], timeout_s, 64, 4)
    due, status, latency = result["due"], result["status"], result["latency"]
    assert len(due) == 150 and np.all(np.diff(due) > 0)
    assert due[100] == pytest.approx(0.5)  # the second phase starts where the first ends
    assert int(Scripted.count) == 150  # the server saw every request: none waited for an answer first
    assert (status == 200).sum() == 105 and (status == 503).sum() == 30
    assert (status == 0).sum() == 15  # never answered: client timeout, no latency
    assert np.isnan(latency[status == 0]).all() and (latency[status > 0] > 0).all()
    assert (latency[status > 0] < timeout_s).all()


def test_a_refused_connection_is_an_error_not_a_timeout() -> None:
    result = run(f"http://127.0.0.1:{free_port()}/predict", b"{}", [(50, 0.2)], 1.0, 16, 0)
    assert set(result["status"].tolist()) == {-1}


def arrays(statuses: list[int], latencies: list[float], step: float) -> dict[str, np.ndarray]:
    n = len(statuses)
    return {
        "due": np.arange(n) * step,
        "latency": np.array(latencies, dtype=float),
        "status": np.array(statuses, dtype=np.int32),
        "lag": np.zeros(n),
        "peak_connections": np.array(1),
    }


def test_recovery_is_the_start_of_a_second_of_normal_windows_after_which_the_tail_stays_normal() -> None:
    step = 0.05  # 5 requests a 250 ms window
    latency = [0.5] * 20 + [0.001] * 40  # slow for the first second of the tail, then normal
    status = [200] * 60
    status[10] = 503  # a refusal inside the slow part changes nothing
    due = np.arange(60) * step
    assert recovery_s(due, np.array(latency), np.array(status), 0.0, 3.0, 0.01) == pytest.approx(1.0)
    status[55] = 0  # a timeout in the last window: not recovered within the tail
    assert recovery_s(due, np.array(latency), np.array(status), 0.0, 3.0, 0.01) is None


def test_one_noisy_window_late_in_a_normal_tail_is_not_the_spike() -> None:
    step = 0.001  # 250 requests a window, 10 s of tail
    n = 10_000
    latency = np.full(n, 0.001)
    latency[:100] = 0.5  # the spike's backlog: the first 100 ms
    # 5 slower requests 7 s later: that window's p99 is over the line (by half, as noise was seen)
    latency[7_000:7_005] = 0.015
    due = np.arange(n) * step
    status = np.full(n, 200)
    assert recovery_s(due, latency, status, 0.0, 10.0, 0.01) == pytest.approx(0.25)
    # a stall late in the tail is not noise: 30 answers of 5 s in its last 75 ms (0.3% of it)
    stalled = latency.copy()
    stalled[-30:] = 5.0
    assert recovery_s(due, stalled, status, 0.0, 10.0, 0.01) is None
    # a tail that stays slow now and then is not recovered: one window in four over the line
    for start in range(1_000, n, 1_000):
        latency[start : start + 20] = 0.015
    assert recovery_s(due, latency, status, 0.0, 10.0, 0.01) is None


def test_the_report_splits_spike_and_tail_and_judges_the_targets() -> None:
    # 1 s baseline, 1 s spike, 1 s tail at 100 requests a second.
    statuses = [200] * 100 + [200, 503] * 50 + [200] * 100
    latencies = [0.002] * 100 + [0.05, 0.001] * 50 + [0.002] * 100
    r = analyse(arrays(statuses, latencies, 0.01), 1.0, 1.0, 1.0)
    assert r["refused_share"] == pytest.approx(0.5)
    assert r["admitted_p99_ms"] == pytest.approx(50.0)
    assert r["refusal_p99_ms"] == pytest.approx(1.0)
    assert r["recovery_s"] == pytest.approx(0.0)
    assert r["client_timeouts"] == r["other_5xx"] == 0
    assert all(ok for _, ok, _ in verdicts(r, health_ok=True))
    statuses[150] = 500
    statuses[290] = 0  # in the tail's last window: not back to normal within it
    r = analyse(arrays(statuses, latencies, 0.01), 1.0, 1.0, 1.0)
    failed = {name for name, ok, _ in verdicts(r, health_ok=False) if not ok}
    assert failed == {
        "0 client timeouts",
        "0 5xx other than 503",
        "/health answered throughout",
        "normal latency within 1 s of the spike's end",
    }


def test_the_floor_server_refuses_every_post_at_once_and_answers_anything_else() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.floor", "--port", str(port), "--seconds", "20"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        for _ in range(100):
            assert proc.poll() is None, "the floor server exited"
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            pytest.fail("the floor server did not come up")
        with conn:
            post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            conn.sendall(post + post + b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
            received = b""
            while received.count(b"HTTP/1.1") < 3:
                chunk = conn.recv(65536)
                assert chunk, "the floor server closed the connection"
                received += chunk
        answers = received.split(b"HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == [b"503", b"503", b"200"]
        assert b"retry-after: 1" in answers[0] and b'"overloaded"' in answers[0]
    finally:
        proc.terminate()
        proc.wait(10)


class HeldUpstream(http.server.BaseHTTPRequestHandler):
    """A worker stand-in: answers a GET at once and a POST once `release` is set."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()
    posts: list[bytes] = []

    def do_GET(self) -> None:
        self.answer(b'{"path": "%s"}' % self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.posts.append(body)
        self.release.wait(20)
        self.answer(b'{"echo": %s}' % body)

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def exchange(port: int, request: bytes) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(request)
    return conn


def read_answer(conn: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"}"):
        chunk = conn.recv(65536)
        assert chunk, "the front closed the connection"
        received += chunk
    return received


def test_the_front_forwards_up_to_its_bound_of_posts_and_refuses_the_rest_at_once() -> None:
    HeldUpstream.release.clear()
    HeldUpstream.posts.clear()
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HeldUpstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.front", "--port", str(port)]
    cmd += ["--upstream", str(upstream.server_address[1]), "--bound", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    conns: list[socket.socket] = []
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[1,2]"
    try:
        for _ in range(100):
            assert proc.poll() is None, "the front exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            pytest.fail("the front did not come up")
        held = exchange(port, post)
        conns.append(held)
        wait_until(lambda: len(HeldUpstream.posts) == 1, 10, "the first POST forwarded")
        # Past the bound: refused at once, and the connection serves its next request.
        refused = exchange(port, post)
        conns.append(refused)
        answer = read_answer(refused)
        assert (
            answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer and b'"overloaded"' in answer
        )
        refused.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")  # never refused
        assert read_answer(refused).startswith(b"HTTP/1.1 200 ")
        # Pipelined while no connection is idle: forwarded one at a time, answered in order.
        refused.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        both = read_answer(refused)
        while both.count(b"HTTP/1.1 200 ") < 2 or not both.endswith(b"}"):
            both += read_answer(refused)
        assert both.index(b'"/a"') < both.index(b'"/b"')
        # A chunked POST is forwarded with its body once the first is answered.
        HeldUpstream.release.set()
        assert read_answer(held).endswith(b'{"echo": [1,2]}')
        chunked = exchange(
            port, b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[3]\r\n0\r\n\r\n"
        )
        conns.append(chunked)
        assert read_answer(chunked).endswith(b'{"echo": [3]}')
        assert HeldUpstream.posts == [b"[1,2]", b"[3]"]
    finally:
        for conn in conns:
            conn.close()
        proc.terminate()
        proc.wait(10)
        upstream.shutdown()
        upstream.server_close()


def test_the_refusal_floor_is_measured_with_the_generator_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overload, "FLOOR_S", 2.0)
    body = tmp_path / "body.json"
    body.write_text('{"instances": [{}]}')
    args = argparse.Namespace(route="/predict", timeout=2.0, out=tmp_path)
    floor = overload.refusal_floor(200.0, body, args)
    assert 0 < floor["p50"] <= floor["p99"] < 2000
    with np.load(tmp_path / "overload-floor.npz") as npz:
        assert set(npz["status"].tolist()) == {503}  # every request refused, none lost
    statuses = [200] * 100 + [200, 503] * 50 + [200] * 100
    r = analyse(arrays(statuses, [0.002] * 300, 0.01), 1.0, 1.0, 1.0)
    r["refusal_floor_ms"] = floor
    [measured] = [m for name, _, m in verdicts(r, health_ok=True) if name.startswith("refusal")]
    assert measured.endswith(f"(floor {floor['p99']:.2f} ms)")


def test_the_loop_lag_note_counts_only_the_ticks_of_the_run() -> None:
    start = {"0.01": 90.0, "0.05": 100.0, "+Inf": 100.0}  # before the run: 10 ticks over 10 ms
    end = {"0.01": 170.0, "0.05": 195.0, "+Inf": 200.0}
    assert overload.lag_note(start, end) == "100 ticks, 20.0% over 10 ms late, 5.0% over 50 ms"
    assert overload.lag_note({}, {}) == "not exported"
