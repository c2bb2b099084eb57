#!/usr/bin/env bash
# Start what the device tests (tests/*/test_device_*.py) need, as root, without stdin, idempotently:
#   - packages: OpenSSH server and client, QEMU user-mode emulation, GNU time (the independent RSS
#     check), busybox (to prove the device side needs nothing but a POSIX shell), locales (a
#     non-UTF-8 locale for the binaries to start in);
#   - binfmt_misc with qemu-aarch64 registered, so that arm64 binaries run on an x86_64 host;
#   - systemd-nspawn (systemd-container) and, on a host whose PID 1 is not systemd, a tmpfs at
#     /run/systemd/nspawn where nspawn keeps its state: the test gateways (scripts/testbeds.py up);
#   - a throwaway sshd on 127.0.0.1 with its own host key, config, log and a generated client key
#     (no password auth), so that `edgebundle test --device ssh://...` runs end to end for real.
# What the tests need to find it is written to $STATE/ssh.env (KEY='value' lines):
#   EDGEBUNDLE_TEST_SSH=ssh://root@127.0.0.1:PORT
#   EDGEBUNDLE_SSH_COMMAND=ssh -F $STATE/ssh_config   (identity + known_hosts of the throwaway server)
# Nothing of the user's own ~/.ssh is read or written.
set -euo pipefail

STATE=${EDGEBUNDLE_CI_DIR:-/tmp/edgebundle-ci}
FIRST_PORT=${EDGEBUNDLE_CI_SSH_PORT:-22022}
PACKAGES=(openssh-server openssh-client qemu-user-static time busybox systemd-container locales)

say() { printf 'ci-services: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (it installs packages, registers binfmt handlers and starts sshd)"
    exit 1
fi

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    # Keep the package's maintainer scripts from starting a system sshd on port 22 (the usual
    # policy-rc.d convention of container images); only ours, on loopback, should run.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    apt-get update -qq </dev/null || rc=$?
    if [ $rc -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            </dev/null >/dev/null || rc=$?
    fi
    [ $made_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    return $rc
}

register_binfmt() {
    local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ ! -e "$dir/register" ]; then
        mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || {
            say "cannot mount binfmt_misc (no privilege here?); qemu runs fall back to an explicit qemu-aarch64-static"
            return 0
        }
    fi
    if [ -e "$dir/qemu-aarch64" ]; then
        return 0
    fi
    if [ ! -r "$conf" ]; then
        say "$conf missing; is qemu-user-static installed?"
        return 1
    fi
    # The F flag in Debian's line opens the interpreter now, so it works inside chroots too.
    grep -v '^#' "$conf" | grep . | head -n 1 >"$dir/register" || {
        say "registering qemu-aarch64 with binfmt_misc failed; qemu runs fall back to qemu-aarch64-static"
        return 0
    }
    say "registered qemu-aarch64 with binfmt_misc"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Ours, and alive: a pid file left by a machine's earlier session may name some other process by now.
sshd_alive() {
    local pid
    pid=$(cat "$STATE/sshd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "-f $STATE/sshd_config"
}

start_sshd() {
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    [ -f "$STATE/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C edgebundle-ci-host \
        -f "$STATE/ssh_host_ed25519_key" </dev/null
    [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C edgebundle-ci-client \
        -f "$STATE/id_ed25519" </dev/null
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys.root"
    chmod 600 "$STATE/authorized_keys.root"

    local port
    if sshd_alive && [ -s "$STATE/port" ]; then
        port=$(cat "$STATE/port")
        say "sshd already running on 127.0.0.1:$port (pid $(cat "$STATE/sshd.pid"))"
    else
        port=$FIRST_PORT
        while port_in_use "$port"; do
            port=$((port + 1))
            [ "$port" -lt $((FIRST_PORT + 100)) ] || { say "no free port from $FIRST_PORT on"; return 1; }
        done
        cat >"$STATE/sshd_config" <<EOF
# Throwaway sshd for edgebundle's device tests (scripts/ci-services.sh). Loopback only, keys only.
Port $port
ListenAddress 127.0.0.1
HostKey $STATE/ssh_host_ed25519_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys.%u
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The key files live under /tmp, whose mode (1777) StrictModes would refuse.
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
EOF
        mkdir -p /run/sshd
        chmod 755 /run/sshd
        /usr/sbin/sshd -t -f "$STATE/sshd_config"
        /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/sshd.log"
        local i
        for i in $(seq 50); do
            port_in_use "$port" && break
            sleep 0.1
        done
        port_in_use "$port" || { say "sshd did not start; see $STATE/sshd.log"; return 1; }
        echo "$port" >"$STATE/port"
        say "sshd started on 127.0.0.1:$port (pid $(cat "$STATE/sshd.pid"), log $STATE/sshd.log)"
    fi

    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1-2 "$STATE/ssh_host_ed25519_key.pub")" \
        >"$STATE/known_hosts"
    cat >"$STATE/ssh_config" <<EOF
# Client side of the throwaway sshd: pass with ssh -F (EDGEBUNDLE_SSH_COMMAND does).
Host *
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
    cat >"$STATE/ssh.env" <<EOF
EDGEBUNDLE_TEST_SSH='ssh://root@127.0.0.1:$port'
EDGEBUNDLE_SSH_COMMAND='ssh -F $STATE/ssh_config'
EOF
    # Prove it works before the tests rely on it.
    ssh -F "$STATE/ssh_config" -p "$port" -- root@127.0.0.1 true </dev/null
    say "ssh to root@127.0.0.1:$port works; test settings in $STATE/ssh.env"
}

nspawn_runtime() {
    local dir=/run/systemd/nspawn
    # Under systemd the directory is there (and /run a tmpfs); elsewhere nspawn still wants it.
    [ -d /run/systemd/system ] && return 0
    mkdir -p "$dir"
    mountpoint -q "$dir" && return 0
    mount -t tmpfs -o mode=755 nspawn "$dir"
    say "mounted a tmpfs at $dir for systemd-nspawn"
}

install_packages
register_binfmt
nspawn_runtime
start_sshd
