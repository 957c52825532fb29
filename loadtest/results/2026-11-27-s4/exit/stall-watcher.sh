#!/bin/bash
# Runs the hub in place (exec) with a watcher that dumps every thread's stack when the
# process has not exited 3 s after "signal received: draining".
me=$$
(
  log=$(readlink /proc/$me/fd/2)
  while kill -0 $me 2>/dev/null; do
    if grep -q "signal received: draining" "$log" 2>/dev/null; then
      sleep 3
      if kill -0 $me 2>/dev/null; then
        top -b -H -n 1 -p $me > /tmp/stall/top-$me.txt 2>&1
        gdb -p $me -batch -ex "thread apply all bt" > /tmp/stall/stacks-$me.txt 2>&1
        sleep 1
        top -b -H -n 1 -p $me > /tmp/stall/top2-$me.txt 2>&1
        cp "$log" /tmp/stall/log-$me.txt
      fi
      exit 0
    fi
    sleep 0.5
  done
) </dev/null >/dev/null 2>&1 &
exec /work/main/target/release/switchboard "$@"
