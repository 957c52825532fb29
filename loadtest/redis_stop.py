#!/usr/bin/env python3
"""Issue 13's Redis fault figure: creates at a steady rate while redis-server is stopped.

Starts its own redis-server (free port, AOF always) and one hub on it, creates tasks at
--rate per second (each with its own idempotency key) for --before seconds, stops Redis
(SIGSTOP) for --stop seconds, continues it (SIGCONT) and keeps creating for --after
seconds. Then retries every key that was not answered 201 (a keyed retry is always
safe) and every acknowledged one (it must still be there: 200, same task). Prints one
JSON object: answers by status, latency while stopped (max, and how many exceeded the
call timeout + 100 ms), the time from SIGCONT to the first 201, and how the ambiguous
answers resolved.

Usage: redis_stop.py [--hub-bin target/release/switchboard] [--rate 100] [--before 5]
                     [--stop 30] [--after 10] [--call-timeout-ms 3000]

Standard library only; needs redis-server on the PATH.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


async def http(port, method, path, token=None, body=None, timeout=60.0):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    data = (body or "").encode()
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
    if token:
        head += f"authorization: Bearer {token}\r\n"
    w.write(head.encode() + b"\r\n" + data)
    raw = await asyncio.wait_for(r.read(), timeout)
    w.close()
    text = raw.decode(errors="replace")
    status = int(text.split()[1])
    payload = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else ""
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hub-bin", default="target/release/switchboard")
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--before", type=float, default=5)
    ap.add_argument("--stop", type=float, default=30)
    ap.add_argument("--after", type=float, default=10)
    ap.add_argument("--call-timeout-ms", type=int, default=3000)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="redis-stop-")
    rport, hport = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", tmp,
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = os.path.join(tmp, "hub.toml")
    with open(cfg, "w") as f:
        f.write(f'[[queues]]\nid = "support"\n[store]\ncall_timeout_ms = {a.call_timeout_ms}\n')
    env = dict(os.environ, SWITCHBOARD_SECRET="redis-stop-secret-0123456789abcdef", RUST_LOG="error")
    common = ["--config", cfg, "--redis", f"redis://127.0.0.1:{rport}/"]
    time.sleep(0.5)
    hub = subprocess.Popen([a.hub_bin, "serve", *common, "--listen", f"127.0.0.1:{hport}"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = subprocess.run([a.hub_bin, "token", *common, "--sub", "crm", "--role", "integration"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                s, _ = await http(hport, "GET", "/readyz")
                if s == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the hub did not become ready")
            await asyncio.sleep(0.1)

        results = []  # (sent_at, key, status, code, latency, task_id)
        stopped_at = continued_at = None
        t0 = time.monotonic()

        async def one(i):
            key = f"k{i}"
            body = json.dumps({"channel": "chat", "queue": "support", "idempotency_key": key})
            sent = time.monotonic()
            try:
                s, v = await http(hport, "POST", "/v1/tasks", token, body)
            except (OSError, asyncio.TimeoutError) as e:
                s, v = 0, str(e)
            lat = time.monotonic() - sent
            code = v.get("error", {}).get("code") if isinstance(v, dict) else None
            tid = v.get("task_id") if isinstance(v, dict) else None
            results.append((sent - t0, key, s, code, lat, tid))

        tasks = []
        total = a.before + a.stop + a.after
        i = 0
        while time.monotonic() - t0 < total:
            now = time.monotonic() - t0
            if stopped_at is None and now >= a.before:
                os.kill(redis.pid, signal.SIGSTOP)
                stopped_at = now
            if stopped_at is not None and continued_at is None and now >= a.before + a.stop:
                os.kill(redis.pid, signal.SIGCONT)
                continued_at = now
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / a.rate - time.monotonic()))
        await asyncio.gather(*tasks)

        limit = a.call_timeout_ms / 1000 + 0.1
        by_status = {}
        for r in results:
            by_status[f"{r[2]} {r[3] or ''}".strip()] = by_status.get(f"{r[2]} {r[3] or ''}".strip(), 0) + 1
        during = [r for r in results if stopped_at <= r[0] < continued_at]
        first_ok = min((r[0] + r[4] for r in results if r[0] >= continued_at and r[2] == 201), default=None)
        # Keyed retries: the ambiguous ones resolve; the acknowledged ones are all there.
        resolved = {"applied_200": 0, "created_now_201": 0, "other": 0}
        lost = 0
        for r in results:
            s, v = await http(hport, "POST", "/v1/tasks", token,
                              json.dumps({"channel": "chat", "queue": "support", "idempotency_key": r[1]}))
            if r[2] in (200, 201):
                if s != 200 or v.get("task_id") != r[5]:
                    lost += 1
            elif r[3] in ("outcome_unknown", "store_unavailable") or r[2] == 0:
                k = {200: "applied_200", 201: "created_now_201"}.get(s, "other")
                resolved[k + ("" if r[3] == "outcome_unknown" else "_after_" + str(r[3]))] = \
                    resolved.get(k + ("" if r[3] == "outcome_unknown" else "_after_" + str(r[3])), 0) + 1
        print(json.dumps({
            "creates": len(results),
            "rate_per_s": a.rate,
            "stopped_secs": a.stop,
            "call_timeout_ms": a.call_timeout_ms,
            "answers": by_status,
            "while_stopped": {
                "n": len(during),
                "max_ms": round(max((r[4] for r in during), default=0) * 1000, 1),
                "over_timeout_plus_100ms": sum(1 for r in during if r[4] > limit),
            },
            "max_ms_overall": round(max(r[4] for r in results) * 1000, 1),
            "first_201_after_sigcont_ms": None if first_ok is None else round((first_ok - continued_at) * 1000, 1),
            "acknowledged_lost": lost,
            "keyed_retries": resolved,
        }, indent=1))
    finally:
        try:
            os.kill(redis.pid, signal.SIGCONT)
        except OSError:
            pass
        hub.terminate()
        redis.terminate()
        hub.wait()
        redis.wait()


asyncio.run(main())
