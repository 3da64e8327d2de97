"""meter.sh: the meter sidecar's launcher (Kubernetes only).

The meter is kept out of the workload's reach: the Pod does NOT share its process
namespace, so the workload (root in its own image) can neither see, signal, nor read the
environment of the meter, whose token lives only in the meter container. The price: the
meter cannot watch the workload's process. It needs no such watch on Kubernetes:

- Start: the meter waits until the workload's boot script has written its status file
  (boot.sh does so at once, before sshd or the workload; the meter sees the file through a
  read-only mount of the workload's /run/openpod emptyDir). So the time Kubernetes spends
  pulling the user's image is not billed. A restarted meter (its journal not empty) does
  not wait: the workload may have deleted that file since.
- End: the meter is a native sidecar, so the kubelet sends it SIGTERM once the workload
  has exited, or when the Pod is deleted (after the workload's own termination). The meter
  treats SIGTERM as `stopped` (docs/metering.md). This script is the container's PID 1,
  which ignores signals it does not trap: it traps TERM/INT and passes them on.
- `--watch-pid` is this script's own pid (PID 1 of the meter container), alive until that
  SIGTERM: the meter's pidfd watch then only guards against this script dying.

Plain POSIX sh: the meter image's shell. Usage:
`sh meter.sh PYTHON STATUS-FILE JOURNAL-DIR METER-ARGS...`
"""

METER_SH = r"""#!/bin/sh
# openpod meter launcher: `sh meter.sh PYTHON STATUS-FILE JOURNAL-DIR METER-ARGS...`
# (see _kube_meter.py in openpod for why it works this way)
_op_python=$1
_op_status=$2
_op_journal=$3
shift 3
_op_child=
_op_stop=

_op_on_signal() {
    _op_stop=yes
    _op_signalled=yes
    [ -z "$_op_child" ] || kill -TERM "$_op_child" 2>/dev/null
}
trap _op_on_signal TERM INT

_op_resumed() {
    for _op_entry in "$_op_journal"/* "$_op_journal"/.[!.]*; do
        [ -e "$_op_entry" ] && return 0
    done
    return 1
}

# Wait for the workload's boot script, unless this is a restart of the meter.
until _op_resumed || [ -e "$_op_status" ]; do
    [ -z "$_op_stop" ] || exit 0  # the Pod went away before its workload ever started
    sleep 1 &
    wait $!
done

_op_line=
read -r _op_line </proc/$$/stat
_op_fields=${_op_line##*) }
# shellcheck disable=SC2086 # split on purpose: field 22 of /proc/PID/stat, the start time
set -- "$@" --journal "$_op_journal" --watch-pid $$ --watch-start-time $(
    set -- $_op_fields
    shift 19
    echo "$1"
)

"$_op_python" -m openpod.meter "$@" &
_op_child=$!
[ -z "$_op_stop" ] || kill -TERM "$_op_child" 2>/dev/null
while :; do
    _op_signalled=
    wait "$_op_child"
    _op_code=$?
    [ -n "$_op_signalled" ] || break # else wait returned for the signal: wait for the meter
done
exit "$_op_code"
"""
