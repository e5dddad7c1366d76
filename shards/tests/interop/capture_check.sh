#!/usr/bin/env bash
# Checks the Diameter in a packet capture with Wireshark's dissector (tshark).
#
#   capture_check.sh CAPTURE.pcap PORT [PORT...]
#
# Every PORT is decoded as Diameter over TCP (-d tcp.port==PORT,diameter), so
# gyro's port and, say, a relay's port can be checked in one go. A frame is a
# finding when Wireshark marks it malformed, or when a Diameter frame carries
# an expert note of severity warning or worse that is not a TCP-analysis note
# (retransmissions and the like are the capture's business, not gyro's).
#
# Prints a per-port count of the Diameter messages seen, then every finding
# with its expert messages. Exit status:
#   0  Diameter frames present, no findings
#   1  findings (printed)
#   2  no Diameter frame at all (wrong port, empty or unflushed capture)
#   3  usage error, or tshark could not read the capture
#
# Capture so that the file is complete: start the capture before the traffic,
#   tcpdump -i lo -B 65536 -U -w FILE 'tcp port P1 or tcp port P2' &
# and after the traffic give tcpdump a moment (packets reach it in blocks),
# then stop it with SIGINT or SIGTERM and wait for it to exit.
set -u

if [ $# -lt 2 ]; then
    echo "usage: $0 CAPTURE.pcap PORT [PORT...]" >&2
    exit 3
fi
capture=$1
shift
if [ ! -r "$capture" ]; then
    echo "capture_check: cannot read $capture" >&2
    exit 3
fi
command -v tshark >/dev/null || { echo "capture_check: tshark not installed" >&2; exit 3; }

decode=()
for port in "$@"; do
    case $port in
        '' | *[!0-9]*) echo "capture_check: bad port '$port'" >&2; exit 3 ;;
    esac
    decode+=(-d "tcp.port==$port,diameter")
done

findings_filter='_ws.malformed || (diameter && _ws.expert.severity >= "warning" && !tcp.analysis.flags)'

# tshark prints a notice when run as root; keep real errors only.
run_tshark() {
    local err rc
    err=$(mktemp)
    tshark -n -r "$capture" "${decode[@]}" "$@" 2>"$err"
    rc=$?
    grep -v -e '^Running as user "root"' "$err" >&2
    rm -f "$err"
    return $rc
}

# One line per Diameter message: TCP port pair, command code, R flag.
if ! messages=$(run_tshark -Y diameter -T fields -E occurrence=a -E separator=' ' \
        -e tcp.srcport -e tcp.dstport -e diameter.cmd.code -e diameter.flags.request); then
    echo "capture_check: tshark failed on $capture" >&2
    exit 3
fi
if [ -z "$messages" ]; then
    echo "capture_check: no Diameter frame in $capture on port(s) $*" >&2
    exit 2
fi

echo "capture_check: $capture, Diameter on port(s) $*"
# A frame can carry several messages: fields then hold comma-separated lists.
printf '%s\n' "$messages" | awk -v ports=" $* " '
    function name(code, req) {
        n = (code == 257) ? "CE" : (code == 280) ? "DW" : (code == 282) ? "DP" : \
            (code == 272) ? "CC" : "cmd" code
        return n ((req == "1" || req == "True") ? "R" : "A")
    }
    {
        port = (index(ports, " " $1 " ") ? $1 : $2)
        nc = split($3, codes, ","); split($4, reqs, ",")
        for (i = 1; i <= nc; i++) { count[port " " name(codes[i], reqs[i])]++; total++ }
    }
    END {
        for (k in count) printf "  port %s\n", k " " count[k] | "sort"
        close("sort")
        printf "  %d Diameter messages\n", total
    }'

if ! findings=$(run_tshark -Y "$findings_filter"); then
    echo "capture_check: tshark failed on $capture" >&2
    exit 3
fi
if [ -n "$findings" ]; then
    count=$(printf '%s\n' "$findings" | wc -l)
    echo "capture_check: $count frame(s) with findings:"
    printf '%s\n' "$findings"
    echo "capture_check: expert messages of those frames:"
    run_tshark -Y "$findings_filter" -T fields -E occurrence=a -E aggregator=' | ' \
        -e frame.number -e _ws.expert.message
    exit 1
fi
echo "capture_check: no findings"
exit 0
