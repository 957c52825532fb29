#!/usr/bin/env python3
"""The slow-connection attack of issue 13, against a running hub, with figures.

Opens N unauthenticated connections in four kinds, a quarter each: silent (sends
nothing), half an upgrade request then nothing, one header byte every 2 s, and a POST
whose body never ends. Records when the hub closed each (from its open), and samples
GET /healthz on fresh connections meanwhile. Prints one JSON object:

  {"connections": N, "opened": n, "closed": n, "still_open": n,
   "close_secs": {"silent": {"max": ...}, ...}, "healthz_ms": {"p50", "p99", "max", "n"}}

Usage: slow_attack.py HOST:PORT [--connections 5000] [--limit-secs 30]
  [--healthz-only SECONDS]   (no attack: only sample /healthz)
  [--no-healthz]             (the attack only: sample /healthz from another process,
                              whose event loop is not busy with 5,000 connections)

Standard library only; needs an open-file limit above N (ulimit -n).
"""

import argparse
import asyncio
import json
import time


async def hold(kind, host, port, out, opened):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.open_connection(host, port)
    except OSError:
        out.append((kind, None))
        return
    opened.append(1)
    try:
        if kind == "half_upgrade":
            w.write(b"GET /v1/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n")
        elif kind == "endless_body":
            w.write(
                b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 100000\r\n\r\n{\"channel\""
            )
        if kind == "drip":
            head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 10000
            i = 0
            while True:
                try:
                    # The hub closing is the event: read with the drip period as timeout.
                    data = await asyncio.wait_for(r.read(1024), 2.0)
                    if not data:
                        break
                except asyncio.TimeoutError:
                    w.write(head[i : i + 1])
                    i += 1
                    await w.drain()
        else:
            await w.drain()
            while True:
                data = await r.read(4096)
                if not data:
                    break
    except (ConnectionError, OSError):
        pass
    out.append((kind, time.monotonic() - t0))
    w.close()


async def healthz_sampler(host, port, stop, samples):
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            await asyncio.wait_for(r.read(), 10)
            w.close()
            samples.append((time.monotonic() - t0) * 1000)
        except (OSError, asyncio.TimeoutError):
            samples.append(float("inf"))
        await asyncio.sleep(0.01)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--limit-secs", type=float, default=30.0)
    ap.add_argument("--healthz-only", type=float, default=None)
    ap.add_argument("--no-healthz", action="store_true")
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    stop = asyncio.Event()
    samples = []
    sampler = None
    if not a.no_healthz:
        sampler = asyncio.create_task(healthz_sampler(host, port, stop, samples))
    result = {}
    if a.healthz_only is not None:
        await asyncio.sleep(a.healthz_only)
    else:
        kinds = ["silent", "half_upgrade", "drip", "endless_body"]
        out, opened = [], []
        tasks = []
        for i in range(a.connections):
            tasks.append(asyncio.create_task(hold(kinds[i % 4], host, port, out, opened)))
            if i % 200 == 199:
                await asyncio.sleep(0)
        done, pending = await asyncio.wait(tasks, timeout=a.limit_secs)
        for t in pending:
            t.cancel()
        close = {}
        for k in kinds:
            ts = [t for kind, t in out if kind == k and t is not None]
            close[k] = {"closed": len(ts), "max": pct(ts, 1.0), "p50": pct(ts, 0.5)}
        result.update(
            connections=a.connections,
            opened=len(opened),
            closed=sum(1 for _, t in out if t is not None),
            still_open=len(pending),
            close_secs=close,
        )
    stop.set()
    if sampler is None:
        print(json.dumps(result))
        return
    await sampler
    fin = [s for s in samples if s != float("inf")]
    result["healthz_ms"] = {
        "n": len(samples),
        "failed": len(samples) - len(fin),
        "p50": pct(fin, 0.5),
        "p99": pct(fin, 0.99),
        "max": pct(fin, 1.0),
    }
    print(json.dumps(result))


asyncio.run(main())
