#!/usr/bin/env python3
"""Longest stretches a thread stayed on CPU in a `perf record -a -F 499` profile.

    perf script -i FILE.perf.data -G -F pid,tid,time,ip,sym,dso | loadtest/perf-bursts.py [N]

At 499 Hz a busy thread is sampled every ~2 ms; samples of one thread less than 2.5 ms
apart are one stretch. Prints the N longest stretches (default 10) with their most
frequent leaf symbols: a long stretch of one thread (a lock held, a big serialization)
is what stalls the requests queued behind it.
"""
import collections
import re
import sys

ROW = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+[0-9a-f]+\s+(.*)")
rows = []
for line in sys.stdin:
    m = ROW.match(line)
    if m and m.group(1) != "0":
        rows.append((int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4).strip()))
if not rows:
    sys.exit("no samples")
t0 = min(r[2] for r in rows)
by_thread = collections.defaultdict(list)
for r in rows:
    by_thread[(r[0], r[1])].append(r)
found = []
for key, v in by_thread.items():
    v.sort(key=lambda r: r[2])
    start = 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i][2] - v[i - 1][2] > 0.0025:
            if i - start >= 5:
                syms = collections.Counter(
                    re.sub(r"\+0x[0-9a-f]+", "", r[3])[:80] for r in v[start:i]
                ).most_common(5)
                found.append((v[i - 1][2] - v[start][2], key, v[start][2] - t0, i - start, syms))
            start = i
found.sort(reverse=True)
for d, (pid, tid), at, n, syms in found[: int(sys.argv[1]) if len(sys.argv) > 1 else 10]:
    print(f"pid {pid} tid {tid} at +{at:.3f} s: on CPU {d * 1000:.0f} ms ({n} samples)")
    for s, c in syms:
        print(f"    {c:4d}  {s}")
