#!/usr/bin/env bash
# Takes the real test node down completely: kube-router and the kubelet, the pods'
# containers (through containerd while it still runs, then whatever is left in the
# kubelet's pod cgroups), containerd and the shims and sandboxes it started,
# kube-router's iptables chains and ipsets, mounts under the node's directory, the CNI
# network namespaces, the bridge, the kubelet's cgroups, the sysctls the kubelet
# rewrote. Processes are ended by PID (recorded in DIR/pids, found by DIR in their
# command line, or in the kubelet's pod cgroups: only what this node started). Safe to
# run twice, and on a half-started node.
#
#   tests/realnode/teardown.sh DIR BRIDGE
set -uo pipefail
dir=$1
bridge=$2
bin=$(cat "$dir/node-bin" 2>/dev/null || true)
sock=$dir/containerd/containerd.sock

stop() { # name: TERM, then KILL after 10 s
    local f=$dir/pids/$1.pid p
    [[ -f $f ]] || return 0
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$p" 2>/dev/null
    fi
    rm -f "$f"
}

stop kube-router
stop kubelet
# The pods' containers, through containerd while it still runs.
if [[ -S $sock ]]; then
    ctr=(ctr --address "$sock" -n k8s.io)
    for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
        timeout 10 "${ctr[@]}" tasks kill -a -s SIGKILL "$task" >/dev/null 2>&1
    done
fi
stop containerd
# Shims, gofers and sandboxes our containerd started: their command lines name DIR.
for p in $(pgrep -f -- "$dir/" 2>/dev/null); do
    [[ $p == "$$" ]] || kill -9 "$p" 2>/dev/null
done
# Whatever still runs in the kubelet's pod cgroups is a container of ours.
for procs in /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
             /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs; do
    [[ -f $procs ]] && xargs -r kill -9 <"$procs" 2>/dev/null
done
sleep 0.5
[[ -x $bin/kube-router ]] && "$bin/kube-router" --cleanup-config >/dev/null 2>&1
# What is left of KUBE-* chains (the kubelet's canaries, kube-router's) and ipsets. The
# test machine runs no other Kubernetes node, so these names are ours.
for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
        $ipt -t $t -S 2>/dev/null | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) .*-j KUBE-' |
            sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -t $t $rule" 2>/dev/null; done
        for c in $($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do $ipt -t $t -F "$c" 2>/dev/null; done
        for c in $($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do $ipt -t $t -X "$c" 2>/dev/null; done
    done
done
ipset list -n 2>/dev/null | grep '^KUBE-' | xargs -r -n1 ipset destroy 2>/dev/null
# Mounts under DIR (overlay rootfs, shm, kubelet volumes), deepest first.
awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
# The CNI network namespaces of our pods.
for ns in /run/netns/cni-*; do
    [[ -e $ns ]] && ip netns del "$(basename "$ns")" 2>/dev/null
done
[[ -f $dir/created-run-netns ]] && rmdir /run/netns 2>/dev/null
ip link del "$bridge" 2>/dev/null
# The kubelet's pod cgroups (cgroup v1: one tree per controller).
find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null
# State the kubelet and containerd 1.6 keep at fixed paths.
rm -rf /var/lib/kubelet/device-plugins /var/lib/kubelet/plugins_registry /var/lib/kubelet/pod-resources
rmdir /var/lib/kubelet 2>/dev/null
rm -rf /var/lib/cni/results /var/lib/cni/networks/sandgate-node
rmdir /var/lib/cni/networks /var/lib/cni 2>/dev/null
awk 'index($2, "/run/containerd/") == 1 {print $2}' /proc/mounts | xargs -r -n1 umount -l 2>/dev/null
rm -rf /run/containerd/s /run/containerd/runc /run/containerd/fifo /run/containerd/io.containerd.runtime.v2.task
rmdir /run/containerd 2>/dev/null
if [[ -f $dir/sysctl.orig ]]; then
    sysctl -q -p "$dir/sysctl.orig" 2>/dev/null && rm -f "$dir/sysctl.orig"
fi
rm -f /run/sandgate-node.dir
exit 0
