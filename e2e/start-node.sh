#!/usr/bin/env bash
# A node for the test bed (scripts/test starts it after the control plane):
# containerd 2 (built by e2e/build-testbed.sh, with Debian's runc) and the
# kubelet of the q8s-kube binary,
# registered with the test bed's apiserver as node q8s-node, their state in
# "$testbed_dir/node". Sourced after e2e/start-testbed.sh, once
# start_kube_testbed has run:
#   start_kube_node    start containerd, the kubelet and kube-scheduler, wait for the node to be
#                      Ready; import the worker and operator images (e2e/build-image.sh); start a Redis
#                      for the pods on the node's bridge and export Q8S_TEST_NODE_REDIS_URL
#   stop_kube_node     stop them, by their process ids
#
# Why containerd 2 and not Debian's 1.6: kubelet 1.36 still accepts 1.6 (it
# falls back to its own cgroupDriver), but 1.6 gives every sandbox an
# oom_score_adj of -998, which these VMs refuse ("can't get final child's PID
# from pipe"), and its restrict_oom_score_adj covers containers only.
# The machine's cgroups are v1 controllers beside an empty unified hierarchy:
# the kubelet is told so (failCgroupV1: false) and uses cgroupfs, under a
# cgroup root of its own.

node_name=q8s-node
# Only pods that tolerate it land here: the other tests' pods (whose images
# exist nowhere) stay Pending instead of asking a registry for them.
node_taint=q8s.test/node=true:NoSchedule
# The test bed's own bridge and pod range: nothing is routed off the machine.
node_bridge=q8s-br0
node_gateway=10.244.0.1
node_subnet=10.244.0.0/24
# Pods get a route to the Services' range (the apiserver's --service-cluster-ip-range),
# through the bridge, where kube-proxy's rules turn them into endpoints; no default route.
node_service_range=10.0.0.0/24

node_install() {
  local missing=()
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v objcopy >/dev/null || missing+=(binutils)
  command -v socat >/dev/null || missing+=(socat)
  command -v iptables >/dev/null || missing+=(iptables)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# The sandbox ("pause") image, built here: a static Go program that waits for
# a signal, in an OCI layout made by umoci. Its source:
node_pause_source() {
  cat <<'GO'
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
}

# Prints the path of the sandbox image's OCI archive, built once into the
# image cache (outside the clone and the data folder) by the content hash of
# its source and tools, like the worker image.
node_pause_image() {
  local cache="${Q8S_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/q8s/images}" hash out work
  hash=$({ node_pause_source; go env GOVERSION; umoci --version; } | sha256sum | cut -c1-16)
  out="$cache/pause-3.10-$hash.tar"
  [ -f "$out" ] && { echo "$out"; return 0; }
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.build-pause.XXXXXX")
  mkdir -p "$work/src"
  node_pause_source >"$work/src/main.go"
  (cd "$work/src" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go mod init pause >/dev/null 2>&1 &&
    GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .) ||
    { rm -rf "$work"; return 1; }
  umoci init --layout "$work/oci" &&
    umoci new --image "$work/oci:3.10" &&
    umoci insert --rootless --image "$work/oci:3.10" "$work/pause" /pause &&
    umoci config --image "$work/oci:3.10" --config.entrypoint /pause --config.user 65535:65535 \
      --architecture amd64 --os linux &&
    (cd "$work/oci" && tar -cf "$work/pause.tar" .) && mv "$work/pause.tar" "$out" ||
    { rm -rf "$work"; return 1; }
  rm -rf "$work"
  echo "$out"
}

# A Redis image for pods (the chart's example runs one): Debian's
# redis-server and the libraries it links, user 999 as the official image's,
# built once into the image cache by the content hash of what goes in.
node_redis_image() {
  local cache="${Q8S_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/q8s/images}" binary libraries hash out work
  command -v redis-server >/dev/null || apt_install redis-server
  binary=$(readlink -f "$(command -v redis-server)")
  libraries=$(ldd "$binary" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u)
  # shellcheck disable=SC2086
  hash=$({ sha256sum "$binary" $libraries; declare -f node_redis_image; umoci --version; } | sha256sum | cut -c1-16)
  out="$cache/redis-$hash.tar"
  [ -f "$out" ] && { echo "$out"; return 0; }
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.build-redis.XXXXXX")
  local root="$work/rootfs" library
  mkdir -p "$root/usr/bin" "$root/data" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  chown 999:999 "$root/data"
  cp "$binary" "$root/usr/bin/redis-server"
  for library in $libraries; do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nredis:x:999:999:redis:/data:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nredis:x:999:\n' >"$root/etc/group"
  umoci init --layout "$work/oci" &&
    umoci new --image "$work/oci:test" &&
    umoci insert --image "$work/oci:test" "$root" / &&
    umoci config --image "$work/oci:test" --config.entrypoint /usr/bin/redis-server \
      --config.user 999:999 --config.workingdir /data --architecture amd64 --os linux &&
    (cd "$work/oci" && tar -cf "$work/redis.tar" .) && mv "$work/redis.tar" "$out" ||
    { rm -rf "$work"; return 1; }
  rm -rf "$work"
  find "$cache" -maxdepth 1 -name "redis-*.tar" ! -path "$out" -delete
  echo "$out"
}

node_cgroup=q8s-testbed
node_controllers=(systemd pids blkio freezer devices memory cpuset cpuacct cpu unified)

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
  if testbed_alive "$n/kubelet.pid"; then
    echo "node: $node_name already runs ($n); stop_kube_node first" >&2
    return 1
  fi
  bin=$("$testbed_e2e/build-testbed.sh") || return 1
  node_install
  node_cgroups || { echo "node: cannot make the cgroup $node_cgroup" >&2; return 1; }
  # The bridge exists before the first pod: its address is the node's.
  if ! ip link show "$node_bridge" >/dev/null 2>&1; then
    ip link add "$node_bridge" type bridge &&
      ip addr add "$node_gateway/${node_subnet#*/}" dev "$node_bridge" &&
      ip link set "$node_bridge" up || return 1
  fi
  mkdir -p "$n/containerd" "$n/cni/net.d" "$n/kubelet"
  cat >"$n/containerd/config.toml" <<EOF
version = 3
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'q8s.local/pause:3.10'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    # These VMs refuse a lower oom_score_adj than the runtime's own (the
    # kubelet asks -998 for sandboxes): keep each at least containerd's.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$(command -v runc)'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '$n/cni/net.d'
EOF
  cat >"$n/cni/net.d/10-q8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "q8s-testbed",
  "plugins": [
    {"type": "bridge", "bridge": "$node_bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$node_subnet", "gateway": "$node_gateway"}]],
              "routes": [{"dst": "$node_service_range"}], "dataDir": "$n/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
  ln -sf "$bin/containerd" "$n/containerd.bin"
  PATH="$bin:$PATH" "$bin/containerd" --config "$n/containerd/config.toml" >"$n/containerd.log" 2>&1 &
  echo $! >"$n/containerd.pid"
  started_kube_node=$n
  testbed_wait "$n/containerd.pid" test -S "$n/containerd/containerd.sock" || { tail -20 "$n/containerd.log" >&2; return 1; }
  local pause
  pause=$(node_pause_image) || return 1
  "$bin/ctr" --address "$n/containerd/containerd.sock" -n k8s.io images import \
    --base-name q8s.local/pause "$pause" >/dev/null || return 1

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
podLogsDir: $n/pod-logs
resolvConf: ""
clusterDNS: [$node_gateway]
clusterDomain: cluster.local
EOF
  "$bin/kubelet" --config="$n/kubelet/config.yaml" --kubeconfig="$Q8S_TEST_KUBECONFIG" \
    --root-dir="$n/kubelet/root" --cert-dir="$n/kubelet/pki" --hostname-override="$node_name" \
    --node-ip="$node_gateway" --register-with-taints="$node_taint" \
    >"$n/kubelet.log" 2>&1 &
  echo $! >"$n/kubelet.pid"
  testbed_wait "$n/kubelet.pid" curl -fsS "http://127.0.0.1:$healthz/healthz" || { tail -30 "$n/kubelet.log" >&2; return 1; }
  # A node needs a scheduler to get pods.
  "$bin/kube-scheduler" --kubeconfig="$Q8S_TEST_KUBECONFIG" \
    --authentication-kubeconfig="$Q8S_TEST_KUBECONFIG" --authorization-kubeconfig="$Q8S_TEST_KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    >"$n/kube-scheduler.log" 2>&1 &
  echo $! >"$n/kube-scheduler.pid"
  # kubectl wait refuses a node not yet registered: wait for it to exist first.
  testbed_wait "$n/kubelet.pid" "$Q8S_TEST_KUBECTL" --kubeconfig "$Q8S_TEST_KUBECONFIG" get node "$node_name" ||
    { tail -30 "$n/kubelet.log" >&2; return 1; }
  "$Q8S_TEST_KUBECTL" --kubeconfig "$Q8S_TEST_KUBECONFIG" wait --for=condition=Ready "node/$node_name" \
    --timeout=120s >/dev/null || { tail -30 "$n/kubelet.log" >&2; return 1; }
  local which image
  for which in worker operator; do
    image=$("$testbed_e2e/build-image.sh" "$which") || return 1
    "$bin/ctr" --address "$n/containerd/containerd.sock" -n k8s.io images import \
      --base-name "docker.io/library/q8s-$which" "$image" >/dev/null || return 1
  done
  image=$(node_redis_image) || return 1
  "$bin/ctr" --address "$n/containerd/containerd.sock" -n k8s.io images import \
    --base-name q8s.local/redis "$image" >/dev/null || return 1
  export Q8S_TEST_NODE_REDIS_IMAGE=q8s.local/redis:test
  node_redis "$n" || return 1
  node_service_network "$n" "$bin" || return 1
  node_dns "$n" "$bin" || return 1
  echo "node $node_name started ($n)" >&2
}

# A Redis the pods reach: on the node's bridge address, with a password
# (it is not loopback), its data in the node's folder.
node_redis() { # node folder
  local n=$1 port password
  command -v redis-server >/dev/null || apt_install redis-server
  port=$(testbed_free_port)
  password=$(openssl rand -hex 16)
  mkdir -p "$n/redis"
  redis-server --bind "$node_gateway" --port "$port" --requirepass "$password" \
    --dir "$n/redis" --save '' --appendonly no --pidfile "$n/redis/redis.pid" \
    >"$n/redis.log" 2>&1 &
  echo $! >"$n/redis.pid"
  # redis-server rewrites its command line, so testbed_alive cannot know it.
  local deadline=$((SECONDS + 30))
  until redis-cli -h "$node_gateway" -p "$port" -a "$password" --no-auth-warning ping 2>/dev/null | grep -q PONG; do
    [ $SECONDS -lt $deadline ] && kill -0 "$(cat "$n/redis.pid")" 2>/dev/null ||
      { tail -20 "$n/redis.log" >&2; return 1; }
    sleep 0.2
  done
  export Q8S_TEST_NODE_REDIS_URL="redis://:$password@$node_gateway:$port/0"
  # For another shell (a cargo test run by hand): . "$n/env"
  printf 'export Q8S_TEST_NODE_REDIS_URL=%q\nexport Q8S_TEST_NODE_REDIS_IMAGE=%q\n' \
    "$Q8S_TEST_NODE_REDIS_URL" "${Q8S_TEST_NODE_REDIS_IMAGE:-}" >"$n/env"
}

# Pods reach Services, the apiserver's among them, as on any node: kube-proxy
# (iptables mode) sends a Service's address to its endpoints. The apiserver
# listens on loopback only, so the `kubernetes` Service's endpoint is the
# bridge address, where socat forwards to it (a node-local proxy in front of
# the apiserver, as HA installs put a load balancer there); its serving
# certificate already names the Service's address, 10.0.0.1. The apiserver
# keeps no endpoints of its own (--endpoint-reconciler-type=none), so the
# EndpointSlice is written here. kube-proxy is told to leave the machine's
# conntrack and localhost settings as they are.
node_service_network() { # node folder, bin folder
  local n=$1 bin=$2 api_port healthz metrics
  api_port=${Q8S_TEST_KUBE_URL##*:}
  # -lf puts the node's folder in its command line, by which stop_kube_node knows it.
  socat -lf "$n/apiserver-proxy.log" "TCP-LISTEN:$api_port,bind=$node_gateway,fork,reuseaddr" \
    "TCP:127.0.0.1:$api_port" &
  echo $! >"$n/apiserver-proxy.pid"
  testbed_wait "$n/apiserver-proxy.pid" curl -ksS -o /dev/null "https://$node_gateway:$api_port/" ||
    { tail -5 "$n/apiserver-proxy.log" >&2; return 1; }
  "$Q8S_TEST_KUBECTL" --kubeconfig "$Q8S_TEST_KUBECONFIG" apply --server-side -f - >/dev/null <<EOF || return 1
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: q8s-testbed
addressType: IPv4
endpoints:
- addresses: [$node_gateway]
  conditions: {ready: true}
ports:
- name: https
  port: $api_port
  protocol: TCP
EOF
  healthz=$(testbed_free_port)
  metrics=$(testbed_free_port)
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$Q8S_TEST_KUBECONFIG"}
hostnameOverride: $node_name
mode: iptables
clusterCIDR: $node_subnet
healthzBindAddress: 127.0.0.1:$healthz
metricsBindAddress: 127.0.0.1:$metrics
nodePortAddresses: ["$node_gateway/32"]
# Pod to Service to a pod on the same bridge: masquerading sends the reply
# back through the node, so it does not depend on the host's br_netfilter.
iptables: {localhostNodePorts: false, masqueradeAll: true}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  "$bin/kube-proxy" --config="$n/kube-proxy.yaml" >"$n/kube-proxy.log" 2>&1 &
  echo $! >"$n/kube-proxy.pid"
  testbed_wait "$n/kube-proxy.pid" curl -fsS "http://127.0.0.1:$healthz/healthz" ||
    { tail -30 "$n/kube-proxy.log" >&2; return 1; }
  # Ready when the apiserver's Service has its rule.
  testbed_wait "$n/kube-proxy.pid" sh -c 'iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q "default/kubernetes:https cluster IP"' ||
    { tail -30 "$n/kube-proxy.log" >&2; return 1; }
}

# The cluster DNS: CoreDNS (e2e/dns) on the bridge address, which the kubelet
# gives pods as their nameserver (clusterDNS), answering for Services and
# pods under cluster.local from the apiserver. Names outside the cluster get
# no answer: nothing here reaches the Internet.
node_dns() { # node folder, bin folder
  local n=$1 bin=$2 health ready
  health=$(testbed_free_port)
  ready=$(testbed_free_port)
  cat >"$n/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $node_gateway
    errors
    health 127.0.0.1:$health
    ready 127.0.0.1:$ready
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $Q8S_TEST_KUBECONFIG
        pods insecure
    }
}
EOF
  "$bin/coredns" -conf "$n/Corefile" >"$n/coredns.log" 2>&1 &
  echo $! >"$n/coredns.pid"
  testbed_wait "$n/coredns.pid" curl -fsS "http://127.0.0.1:$ready/ready" ||
    { tail -30 "$n/coredns.log" >&2; return 1; }
}

# Stops the node and leaves nothing behind: pods are deleted through the
# apiserver first, so the kubelet tears their sandboxes down (CNI, netns);
# then the kubelet and containerd stop; any shim, mount, bridge or cgroup of
# the node that is left goes after them.
stop_kube_node() {
  local n=${started_kube_node:-$testbed_dir/node} name pid deadline
  if testbed_alive "$n/kubelet.pid" && [ -n "${Q8S_TEST_KUBECTL:-}" ]; then
    # A graceful delete: the pods are gone once the kubelet has stopped them.
    "$Q8S_TEST_KUBECTL" --kubeconfig "$Q8S_TEST_KUBECONFIG" delete pods --all-namespaces \
      --field-selector "spec.nodeName=$node_name" --grace-period=1 --timeout=60s >/dev/null 2>&1 || true
    deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ] &&
      "$(dirname "$(readlink -f "$n/containerd.bin")")/ctr" --address "$n/containerd/containerd.sock" \
        -n k8s.io tasks ls -q 2>/dev/null | grep -q .; do
      sleep 0.5
    done
  fi
  if [ -f "$n/redis.pid" ]; then
    kill "$(cat "$n/redis.pid")" 2>/dev/null || true
    rm -f "$n/redis.pid" "$n/env"
  fi
  # The network namespaces of sandboxes still there, to remove once their
  # runtime is gone (the kubelet had no time to tear them down).
  local ctr netns=""
  ctr="$(dirname "$(readlink -f "$n/containerd.bin" 2>/dev/null || echo /nonexistent)")/ctr"
  if [ -x "$ctr" ] && [ -S "$n/containerd/containerd.sock" ]; then
    netns=$("$ctr" --address "$n/containerd/containerd.sock" -n k8s.io containers ls -q 2>/dev/null |
      while read -r id; do
        "$ctr" --address "$n/containerd/containerd.sock" -n k8s.io containers info "$id" 2>/dev/null
      done | python3 -c '
import json, sys
text = sys.stdin.read()
decoder, at = json.JSONDecoder(), 0
while at < len(text):
    if text[at].isspace():
        at += 1
        continue
    info, at = decoder.raw_decode(text, at)
    for ns in ((info.get("Spec") or {}).get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
            print(ns["path"].rsplit("/", 1)[1])
' | sort -u)
  fi
  # socat forks a child per connection: they go with their parent.
  if testbed_alive "$n/apiserver-proxy.pid"; then
    pkill -P "$(cat "$n/apiserver-proxy.pid")" socat 2>/dev/null || true
  fi
  for name in coredns kube-proxy apiserver-proxy kube-scheduler kubelet containerd; do
    if testbed_alive "$n/$name.pid"; then
      pid=$(cat "$n/$name.pid")
      kill "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 15))
      while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    fi
    rm -f "$n/$name.pid"
  done
  # Shims of this node's containerd (their command line names its socket),
  # then whatever still runs in the node's cgroups: all of it is the node's.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $n/" 2>/dev/null); do
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -d "/sys/fs/cgroup/pids/$node_cgroup" ]; then
    find "/sys/fs/cgroup/pids/$node_cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null |
      while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
  fi
  grep -o " $n/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  sleep 1
  node_cgroups_remove
  for name in $netns; do
    ip netns delete "$name" 2>/dev/null || true
  done
  ip link delete "$node_bridge" 2>/dev/null || true
  # kube-proxy's own rules go with it.
  if [ -f "$n/kube-proxy.yaml" ]; then
    "$(dirname "$(readlink -f "$n/containerd.bin")")/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  unset Q8S_TEST_NODE_REDIS_URL Q8S_TEST_NODE_REDIS_IMAGE
  started_kube_node=""
}
