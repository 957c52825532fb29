#!/bin/sh
# Profiles one load-test run: CPU by process (user/system, from /proc) and the machine's
# split (user, system, softirq, idle, from /proc/stat) over a window of the load, plus a
# `perf record` (cpu-clock, system-wide) of the same window, reported by process and by
# symbol.
#
#   loadtest/profile.sh NAME DELAY SECS -- loadtest-args...
#   loadtest/profile.sh route-10000 3 6 -- route --agents 2000 --rate 10000 --duration 10 --http-conns 64 --quiet
#
# NAME: output prefix in loadtest/results/; DELAY: seconds after the start before the
# window (past the login); SECS: the window. Needs perf (linux-perf); without it, only
# the /proc figures.
set -u
cd "$(dirname "$0")/.." || exit 2
name=$1 delay=$2 secs=$3
shift 3
[ "${1:-}" = "--" ] && shift
OUT=loadtest/results
mkdir -p "$OUT"
LT=./target/release/loadtest

"$LT" "$@" >"$OUT/profile-$name.run.txt" 2>&1 &
H=$!
sleep "$delay"
kids=$(pgrep -P "$H" | tr '\n' ' ')
labels=$(for p in $kids; do echo "$p $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-60)"; done)
label_of() {
    if [ "$1" = "$H" ]; then echo "harness: loadtest"; else echo "$labels" | awk -v p="$1" '$1 == p { $1 = ""; print substr($0, 2) }'; fi
}
export H kids secs
# The /proc readings are taken inside the window perf records (its child command), so
# that both cover the same seconds.
window='
    t() { for p in $H $kids; do echo "$p $(awk "{print \$14, \$15}" /proc/$p/stat 2>/dev/null)"; done; }
    m() { awk "/^cpu /{print \$2 + \$3, \$4, \$7 + \$8, \$6, \$5, \$9}" /proc/stat; }
    t >"$W.before"; m >"$W.m0"
    sleep "$secs"
    t >"$W.after"; m >"$W.m1"
'
W=$(mktemp)
export W
if command -v perf >/dev/null 2>&1; then
    perf record -a -F 499 -g -o "$OUT/profile-$name.perf.data" -- sh -c "$window" 2>/dev/null
else
    sh -c "$window"
fi
before=$(cat "$W.before") after=$(cat "$W.after") m0=$(cat "$W.m0") m1=$(cat "$W.m1")
rm -f "$W" "$W.before" "$W.after" "$W.m0" "$W.m1"
wait "$H"
rc=$?
{
    echo "# loadtest $* (exit $rc); window: ${secs} s from ${delay} s after the start; CLK_TCK $(getconf CLK_TCK)"
    echo "# process                                   user_s  system_s  cores"
    for p in $H $kids; do
        b=$(echo "$before" | awk -v p="$p" '$1 == p {print $2, $3}')
        a=$(echo "$after" | awk -v p="$p" '$1 == p {print $2, $3}')
        exe=$(label_of "$p" | cut -c1-40)
        echo "$b $a" | awk -v e="$exe" -v w="$secs" \
            'NF == 4 { printf "%-42s %7.2f %9.2f %6.2f\n", e, ($3 - $1) / 100, ($4 - $2) / 100, ($3 - $1 + $4 - $2) / 100 / w }'
    done
    echo "$m0 $m1" | awk -v w="$secs" '{
        printf "machine (2 cores x %s s = %.0f core-s): user %.2f, system %.2f, irq+softirq %.2f, iowait %.2f, idle %.2f, steal %.2f core-s\n",
            w, 2 * w, ($7 - $1) / 100, ($8 - $2) / 100, ($9 - $3) / 100, ($10 - $4) / 100, ($11 - $5) / 100, ($12 - $6) / 100 }'
} >"$OUT/profile-$name.cpu.txt"
cat "$OUT/profile-$name.cpu.txt"
if [ -f "$OUT/profile-$name.perf.data" ]; then
    D="$OUT/profile-$name.perf.data"
    {
        echo "## all samples by process image (kernel time is charged to the process it ran for)"
        perf report -i "$D" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
        for p in $H $kids; do
            label=$(label_of "$p")
            echo
            perf report -i "$D" --pid "$p" --no-children --sort dso,sym --stdio -g none --percentage relative 2>/dev/null |
                grep -v '^#' | grep -v '^$' >"$D.$p"
            echo "## pid $p $label: samples by image (share of this process's samples)"
            awk '{ gsub("%", "", $1); s[$2] += $1 } END { for (k in s) printf "    %6.2f%%  %s\n", s[k], k }' "$D.$p" | sort -rn | head -6
            echo "## pid $p $label: samples by kind"
            awk '{ gsub("%", "", $1); t = $0; k = "other"
                   if ($2 == "[kernel.kallsyms]") k = "kernel (network stack, scheduler, syscalls)"
                   else if (t ~ /malloc|free|memmove|memcpy|memset|realloc|cfree|unlink_chunk|consolidate/) k = "allocator and memcpy/memset (libc)"
                   else if (t ~ /serde|format_escaped|itoa|ryu|to_rfc3339|fmt::/) k = "JSON and formatting"
                   else if (t ~ /tokio|mio|futures|waker|Instrumented|tracing/) k = "async runtime and tracing"
                   else if (t ~ /tungstenite|hyper|axum|http|sha1|base64/) k = "websocket and HTTP framing"
                   else if (t ~ /redis::|Redis/) k = "redis client"
                   else if (t ~ /hash|Hash|sip|dashmap|DashMap|BTree|btree/) k = "hashing and maps"
                   else if (t ~ /switchboard::|loadtest::/) k = "own logic"
                   s[k] += $1 } END { for (k in s) printf "    %6.2f%%  %s\n", s[k], k }' "$D.$p" | sort -rn
            echo "## pid $p $label: top symbols (share of this process's samples)"
            head -30 "$D.$p"
            rm -f "$D.$p"
        done
    } >"$OUT/profile-$name.perf.txt"
    [ -n "${KEEP_PERF:-}" ] || rm -f "$D"
fi
