#!/bin/sh
# openpod boot script: `sh boot.sh [workload argv...]`
#
# Every runtime wraps the pod's workload with this script, so it must run on
# any image: plain POSIX sh (dash, busybox ash, bash), no sed/awk/readlink.
# It gives the pod its SSH access, then `exec`s the workload (or sleeps),
# so the workload keeps the pid the runtime started and receives its signals.
#
#   PUBLIC_KEY            newline-separated authorized_keys lines
#   OPENPOD_SSH_DIR       host keys, sshd config, pid file, sshd.log (default /etc/ssh)
#   OPENPOD_SSH_PORT      port sshd listens on (default 22)
#   OPENPOD_SSH_LISTEN    address sshd listens on (default: all)
#   OPENPOD_SSHD          sshd binary to use (default: found in PATH or sbin dirs)
#   OPENPOD_BOOT_STATUS   file that receives `ssh=started` or `ssh=unavailable: why`
#
# Variables of this script are prefixed _op_ so that they cannot clobber the
# user's environment before it is exported for SSH sessions.

_op_ssh_dir=${OPENPOD_SSH_DIR:-/etc/ssh}
_op_port=${OPENPOD_SSH_PORT:-22}
_op_home=${HOME:-/root}
_op_nl='
'

_op_status() {
    # Written atomically (tmp + rename): the runtime polls this file.
    [ -n "${OPENPOD_BOOT_STATUS:-}" ] || return 0
    printf '%s\n' "$1" >"$OPENPOD_BOOT_STATUS.tmp" &&
        mv -f "$OPENPOD_BOOT_STATUS.tmp" "$OPENPOD_BOOT_STATUS"
}

_op_find() {
    # First executable among: command -v NAME, then the usual sbin/bin dirs
    # (PATH of a non-login shell often lacks sbin).
    _op_found=$(command -v "$1" 2>/dev/null)
    case $_op_found in /*) [ -x "$_op_found" ] && return 0 ;; esac
    for _op_dir in /usr/sbin /usr/local/sbin /sbin /usr/bin /usr/local/bin /bin; do
        _op_found=$_op_dir/$1
        [ -x "$_op_found" ] && return 0
    done
    _op_found=
    return 1
}

_op_write_keys() {
    # The platform owns authorized_keys: rewritten at every boot so that a key
    # removed from the account stops working at the next start.
    umask 077
    mkdir -p "$_op_home/.ssh" && chmod 700 "$_op_home/.ssh" || return 1
    printf '%s\n' "${PUBLIC_KEY:-}" >"$_op_home/.ssh/authorized_keys" || return 1
    chmod 600 "$_op_home/.ssh/authorized_keys"
}

_op_write_env() {
    # SSH sessions do not inherit the pod's environment: sshd reads
    # ~/.ssh/environment (PermitUserEnvironment yes), one NAME=value a line,
    # value taken verbatim to the end of the line (spaces are kept).
    # Values holding a newline cannot be represented there and are left out.
    umask 077
    _op_seen=
    env | while IFS= read -r _op_line; do
        _op_name=${_op_line%%=*}
        [ "$_op_name" != "$_op_line" ] || continue
        case $_op_name in
            '' | [0-9]* | *[!A-Za-z0-9_]* | _op_*) continue ;;
            PUBLIC_KEY | HOME | PWD | OLDPWD | SHLVL | _ | TERM | USER | LOGNAME) continue ;;
            SHELL | MAIL | HOSTNAME | SSH_*) continue ;;
        esac
        case " $_op_seen " in *" $_op_name "*) continue ;; esac
        _op_seen="$_op_seen $_op_name"
        eval "_op_isset=\${$_op_name+x}"
        [ -n "$_op_isset" ] || continue
        eval "_op_value=\$$_op_name"
        case $_op_value in *"$_op_nl"*) continue ;; esac
        printf '%s=%s\n' "$_op_name" "$_op_value"
    done >"$_op_home/.ssh/environment.tmp" &&
        mv -f "$_op_home/.ssh/environment.tmp" "$_op_home/.ssh/environment"
}

_op_host_key() {
    _op_key=$_op_ssh_dir/ssh_host_ed25519_key
    if [ ! -s "$_op_key" ]; then
        _op_find ssh-keygen || { _op_reason="no ssh-keygen in the image"; return 1; }
        rm -f "$_op_key" "$_op_key.pub"
        "$_op_found" -q -t ed25519 -N '' -C '' -f "$_op_key" </dev/null >/dev/null 2>&1 ||
            { _op_reason="ssh-keygen failed"; return 1; }
    fi
    if [ ! -s "$_op_key.pub" ] && _op_find ssh-keygen; then
        "$_op_found" -y -f "$_op_key" >"$_op_key.pub" 2>/dev/null
    fi
    return 0
}

_op_write_config() {
    _op_conf=$_op_ssh_dir/openpod_sshd_config
    {
        echo "# Written by openpod boot.sh at every start; edits are lost."
        echo "Port $_op_port"
        [ -z "${OPENPOD_SSH_LISTEN:-}" ] || echo "ListenAddress $OPENPOD_SSH_LISTEN"
        echo "HostKey \"$_op_key\""
        echo "PidFile \"$_op_ssh_dir/sshd.pid\""
        echo "PasswordAuthentication no"
        echo "KbdInteractiveAuthentication no"
        echo "PermitRootLogin prohibit-password"
        echo "PubkeyAuthentication yes"
        echo "AuthorizedKeysFile .ssh/authorized_keys"
        echo "PermitUserEnvironment yes"
        echo "Subsystem sftp internal-sftp"
        echo "AllowTcpForwarding yes"
        echo "X11Forwarding no"
        echo "UsePAM no"
        echo "UseDNS no"
        echo "PrintMotd no"
        echo "PrintLastLog no"
        # A pod is single-user and its home is often a volume whose mode the
        # user controls (0777 is common): StrictModes would then silently
        # refuse every key. The key files themselves are written 700/600.
        echo "StrictModes no"
    } >"$_op_conf.tmp" && mv -f "$_op_conf.tmp" "$_op_conf"
}

_op_start_sshd() {
    if [ -n "${OPENPOD_SSHD:-}" ]; then
        _op_found=$OPENPOD_SSHD
        [ -x "$_op_found" ] || { _op_reason="no sshd binary at $_op_found"; return 1; }
    else
        _op_find sshd || { _op_reason="no sshd binary in the image"; return 1; }
    fi
    _op_sshd=$_op_found
    case $_op_sshd in /*) ;; *) _op_reason="sshd path must be absolute: $_op_sshd"; return 1 ;; esac
    mkdir -p "$_op_ssh_dir" || { _op_reason="cannot create $_op_ssh_dir"; return 1; }
    _op_host_key || return 1
    _op_write_config || { _op_reason="cannot write the sshd config"; return 1; }
    # Privilege separation directory (mmdebstrap-style images have an empty /run).
    [ -d /run/sshd ] || mkdir -p -m 755 /run/sshd 2>/dev/null
    if ! _op_err=$("$_op_sshd" -t -f "$_op_conf" 2>&1 </dev/null); then
        _op_reason="sshd rejected its config: ${_op_err%%"$_op_nl"*}"
        return 1
    fi
    # -D: sshd stays a child of this shell, hence inside the pod's process
    # tree and namespaces, and dies with the pod. -e: its log goes to sshd.log.
    "$_op_sshd" -D -e -f "$_op_conf" </dev/null >>"$_op_ssh_dir/sshd.log" 2>&1 &
    return 0
}

_op_keys_ok=yes
(_op_write_keys) || _op_keys_ok=no
(_op_write_env) || :
if [ "$_op_keys_ok" = no ]; then
    _op_status "ssh=unavailable: cannot write $_op_home/.ssh/authorized_keys"
elif _op_start_sshd; then
    _op_status "ssh=started"
else
    _op_status "ssh=unavailable: $_op_reason"
fi

if [ $# -gt 0 ]; then
    exec "$@"
fi

# No workload: keep the pod up. GNU and BusyBox >= 1.31 sleep accept
# `infinity`; elsewhere loop, trapping TERM so a stop request ends the loop.
_op_help=$(sleep --help 2>&1 </dev/null)
case $_op_help in
    *coreutils*) exec sleep infinity ;;
    *"BusyBox v1."*)
        _op_minor=${_op_help#*BusyBox v1.}
        _op_minor=${_op_minor%%.*}
        case $_op_minor in
            [0-9][0-9]) [ "$_op_minor" -ge 31 ] && exec sleep infinity ;;
        esac
        ;;
esac
trap 'kill $! 2>/dev/null; exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $!
done
