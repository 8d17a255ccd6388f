#!/usr/bin/env bash
# A node for the test bed (work in progress, not yet called by scripts/test):
# containerd (Debian's 1.6, with runc) and the kubelet of the q8s-kube binary,
# registered with the test bed's apiserver as node q8s-node, their state in
# "$testbed_dir/node". Sourced after e2e/start-testbed.sh, once
# start_kube_testbed has run:
#   start_kube_node    start containerd and the kubelet, wait for the node to be Ready
#   stop_kube_node     stop them, by their process ids
#
# Why Debian's containerd 1.6: it is a package of this machine, and kubelet
# 1.36 still takes the cgroup driver from its own configuration when the
# runtime does not report one (containerd 1.x; the fallback goes in 1.37).
# The machine's cgroups are v1 controllers beside an empty unified hierarchy:
# the kubelet is told so (failCgroupV1: false) and uses cgroupfs, under a
# cgroup root of its own.

node_name=q8s-node
# The test bed's own bridge and pod range: nothing is routed off the machine.
node_bridge=q8s-br0
node_gateway=10.244.0.1
node_subnet=10.244.0.0/24

node_install() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v umoci >/dev/null || missing+=(umoci)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# The sandbox ("pause") image, built here: a static Go program that waits for
# a signal, in an OCI layout made by umoci, cached by content hash.
node_pause_image() { # dir → prints the OCI archive's path
  local out="$1/pause.tar" work="$1/pause"
  [ -f "$out" ] && { echo "$out"; return 0; }
  rm -rf "$work" && mkdir -p "$work/src" "$work/rootfs"
  cat >"$work/src/main.go" <<'GO'
// Command pause holds a pod's namespaces until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
GO
  (cd "$work/src" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go mod init pause >/dev/null 2>&1 &&
    GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .) || return 1
  umoci init --layout "$work/oci" &&
    umoci new --image "$work/oci:3.10" &&
    umoci insert --rootless --image "$work/oci:3.10" "$work/pause" /pause &&
    umoci config --image "$work/oci:3.10" --config.entrypoint /pause --config.user 65535:65535 \
      --architecture amd64 --os linux || return 1
  (cd "$work/oci" && tar -cf "$out" .) || return 1
  rm -rf "$work"
  echo "$out"
}

node_cgroup=q8s-testbed
node_controllers=(systemd pids blkio freezer devices memory cpuset cpuacct cpu)

# The kubelet's cgroup root, a child cgroup in each v1 controller (the
# hierarchies themselves are used as they are); cpuset children start empty,
# so they get their parent's CPUs and memory nodes.
node_cgroups() {
  local c
  for c in "${node_controllers[@]}"; do
    [ -d "/sys/fs/cgroup/$c" ] || continue
    mkdir -p "/sys/fs/cgroup/$c/$node_cgroup" || return 1
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$node_cgroup/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$node_cgroup/cpuset.mems"
}

# Removes the cgroups the node made, deepest first (only empty ones go).
node_cgroups_remove() {
  local c
  for c in "${node_controllers[@]}"; do
    [ -d "/sys/fs/cgroup/$c/$node_cgroup" ] || continue
    find "/sys/fs/cgroup/$c/$node_cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

start_kube_node() {
  local d="$testbed_dir" n="$testbed_dir/node" bin
  bin=$("$testbed_e2e/build-testbed.sh") || return 1
  node_install
  node_cgroups || { echo "node: cannot make the cgroup $node_cgroup" >&2; return 1; }
  # The bridge exists before the first pod: its address is the node's.
  if ! ip link show "$node_bridge" >/dev/null 2>&1; then
    ip link add "$node_bridge" type bridge &&
      ip addr add "$node_gateway/${node_subnet#*/}" dev "$node_bridge" &&
      ip link set "$node_bridge" up || return 1
  fi
  mkdir -p "$n/containerd" "$n/cni/net.d" "$n/kubelet" "$n/images"
  cat >"$n/containerd/config.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "q8s.local/pause:3.10"
  enable_selinux = false
  # These VMs refuse a lower oom_score_adj than the runtime's own (the kubelet
  # asks -998 for sandboxes): keep each at least containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
EOF
  cat >"$n/cni/net.d/10-q8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "q8s-testbed",
  "plugins": [
    {"type": "bridge", "bridge": "$node_bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$node_subnet", "gateway": "$node_gateway"}]],
              "dataDir": "$n/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
  containerd --config "$n/containerd/config.toml" >"$n/containerd.log" 2>&1 &
  echo $! >"$n/containerd.pid"
  started_kube_node=$n
  testbed_wait "$n/containerd.pid" test -S "$n/containerd/containerd.sock" || { tail -20 "$n/containerd.log" >&2; return 1; }
  local pause
  pause=$(node_pause_image "$n/images") || return 1
  ctr --address "$n/containerd/containerd.sock" -n k8s.io images import \
    --base-name q8s.local/pause --digests "$pause" >/dev/null || return 1
  ctr --address "$n/containerd/containerd.sock" -n k8s.io images tag --force \
    "$(ctr --address "$n/containerd/containerd.sock" -n k8s.io images ls -q | grep '^q8s.local/pause' | head -1)" \
    q8s.local/pause:3.10 >/dev/null 2>&1 || true

  local port healthz
  port=$(testbed_free_port)
  healthz=$(testbed_free_port)
  cat >"$n/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup
address: $node_gateway
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$d/ca.crt"}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
failSwapOn: false
cpuManagerPolicy: static
reservedSystemCPUs: "0"
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
resolvConf: ""
EOF
  "$bin/kubelet" --config="$n/kubelet/config.yaml" --kubeconfig="$Q8S_TEST_KUBECONFIG" \
    --root-dir="$n/kubelet/root" --cert-dir="$n/kubelet/pki" --hostname-override="$node_name" \
    --node-ip="$node_gateway" \
    >"$n/kubelet.log" 2>&1 &
  echo $! >"$n/kubelet.pid"
  testbed_wait "$n/kubelet.pid" curl -fsS "http://127.0.0.1:$healthz/healthz" || { tail -30 "$n/kubelet.log" >&2; return 1; }
  echo "node $node_name started ($n)" >&2
}

stop_kube_node() {
  local n=${started_kube_node:-$testbed_dir/node} name
  for name in kubelet containerd; do
    if testbed_alive "$n/$name.pid"; then
      kill "$(cat "$n/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$n/$name.pid"
  done
  sleep 1
  node_cgroups_remove
  ip link delete "$node_bridge" 2>/dev/null || true
  started_kube_node=""
}
