#!/usr/bin/env bash
# The Kubernetes test bed: etcd and kube-apiserver (and, when asked, the
# kube-controller-manager) from e2e/build-testbed.sh, on 127.0.0.1 on free
# ports, with a CA, serving certificate, service-account key and token file of
# their own, in a data folder of their own.
#
# Sourced (scripts/test does): defines start_kube_testbed and stop_kube_testbed.
# start_kube_testbed exports what the tests read:
#   Q8S_TEST_KUBECONFIG        an admin kubeconfig (user q8s-admin, group system:masters)
#   Q8S_TEST_KUBE_URL          https://127.0.0.1:PORT
#   Q8S_TEST_KUBE_CA           the CA certificate the server's certificate is signed by
#   Q8S_TEST_KUBE_TOKEN        the admin's bearer token
#   Q8S_TEST_KUBE_USER_TOKEN   the token of q8s-tester, a user with no RBAC grant at all
#   Q8S_TEST_KUBECTL           kubectl of the same Kubernetes version
#   Q8S_TEST_HELM              helm v3
#   Q8S_TEST_MONITORING_CRDS   the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs
#   Q8S_TEST_PROMETHEUS, Q8S_TEST_PROMTOOL   Prometheus and promtool
#   Q8S_TEST_DASHBOARDS_CHECK  q8s-dashboards: the dashboards in Grafana's typed model, their queries
# stop_kube_testbed stops, by their process ids, only what start_kube_testbed started.
#
# Run as a command, for a shell of your own:
#   eval "$(e2e/start-testbed.sh start)"    start (or find running) and print the exports
#   e2e/start-testbed.sh stop               stop the processes recorded in the data folder
#
# Settings:
#   Q8S_TESTBED_DIR            data folder (default: one per clone under $TMPDIR)
#   Q8S_TESTBED_CONTROLLERS=1  also run kube-controller-manager (ServiceAccount admission on,
#                              namespaces finalize, Deployments get ReplicaSets and Pods)
#   Q8S_TESTBED_EXTRA_TOKENS   a file of more token lines (token,user,uid,"group1,group2")
#   Q8S_TESTBED_START_TIMEOUT  seconds to wait for each component to be ready (default 120)

testbed_e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
testbed_dir="${Q8S_TESTBED_DIR:-${TMPDIR:-/tmp}/q8s-testbed-$(printf %s "$testbed_e2e" | md5sum | cut -c1-8)}"

testbed_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether the process recorded in the pid file $1 is alive and is one of ours.
testbed_alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$testbed_dir/"
}

testbed_logs() {
  local name
  for name in etcd kube-apiserver kube-controller-manager; do
    if [ -f "$testbed_dir/$name.log" ]; then
      echo "---- last lines of $testbed_dir/$name.log" >&2
      tail -n 60 "$testbed_dir/$name.log" >&2
    fi
  done
}

# Waits until `$2...` succeeds, for at most the start timeout; fails early when
# the process of pid file $1 has exited.
testbed_wait() {
  local pidfile=$1 deadline=$((SECONDS + ${Q8S_TESTBED_START_TIMEOUT:-120}))
  shift
  until "$@" >/dev/null 2>&1; do
    # Only whether it runs: just after the fork its command line is still
    # the shell's, which testbed_alive would take for a stranger's.
    if ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      echo "test bed: $(basename "$pidfile" .pid) exited during start-up" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "test bed: $(basename "$pidfile" .pid) not ready after ${Q8S_TESTBED_START_TIMEOUT:-120} s" >&2
      return 1
    fi
    sleep 0.2
  done
}

testbed_certificates() {
  local d=$testbed_dir
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj /CN=q8s-testbed-ca -keyout "$d/ca.key" -out "$d/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=kube-apiserver -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1" \
    >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  # The apiserver's client certificate for the node's kubelet (logs, exec).
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=kube-apiserver-kubelet-client -keyout "$d/kubelet-client.key" -out "$d/kubelet-client.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" >"$d/kubelet-client.ext"
  openssl x509 -req -in "$d/kubelet-client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/kubelet-client.ext" -out "$d/kubelet-client.crt" 2>/dev/null
  # The key service-account tokens are signed with (ES256).
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/sa.key"
  openssl ec -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

testbed_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: q8s-testbed
  cluster:
    server: $Q8S_TEST_KUBE_URL
    certificate-authority-data: $(base64 -w0 <"$testbed_dir/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: q8s-testbed
  context:
    cluster: q8s-testbed
    user: $2
current-context: q8s-testbed
EOF
  chmod 600 "$1"
}

# Starts etcd and kube-apiserver (or finds them running from this data folder)
# and exports the Q8S_TEST_KUBE* variables.
start_kube_testbed() {
  local bin
  bin=$("$testbed_e2e/build-testbed.sh") || return 1
  if testbed_alive "$testbed_dir/kube-apiserver.pid" && testbed_alive "$testbed_dir/etcd.pid" &&
    [ -f "$testbed_dir/env" ]; then
    . "$testbed_dir/env"
    echo "Kubernetes test bed already running at $Q8S_TEST_KUBE_URL ($testbed_dir)" >&2
    return 0
  fi
  stop_kube_testbed_in "$testbed_dir" # leftovers of a run that died half-way
  local d=$testbed_dir etcd_port peer_port api_port admin_token user_token controllers
  controllers=${Q8S_TESTBED_CONTROLLERS:-0}
  rm -rf "$d"
  mkdir -p "$d"
  chmod 700 "$d"
  testbed_certificates || { echo "test bed: openssl failed" >&2; return 1; }
  admin_token=$(openssl rand -hex 24)
  user_token=$(openssl rand -hex 24)
  {
    echo "$admin_token,q8s-admin,q8s-admin,\"system:masters\""
    echo "$user_token,q8s-tester,q8s-tester"
    if [ -n "${Q8S_TESTBED_EXTRA_TOKENS:-}" ]; then cat "$Q8S_TESTBED_EXTRA_TOKENS"; fi
  } >"$d/tokens.csv"

  etcd_port=$(testbed_free_port)
  peer_port=$(testbed_free_port)
  "$bin/etcd" --name=q8s-testbed --data-dir="$d/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="q8s-testbed=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level=warn \
    >"$d/etcd.log" 2>&1 &
  echo $! >"$d/etcd.pid"
  started_kube_testbed=$d
  testbed_wait "$d/etcd.pid" curl -fsS "http://127.0.0.1:$etcd_port/health" ||
    { testbed_logs; stop_kube_testbed; return 1; }

  api_port=$(testbed_free_port)
  local admission=--disable-admission-plugins=ServiceAccount
  [ "$controllers" = 1 ] && admission=--enable-admission-plugins=ServiceAccount
  "$bin/kube-apiserver" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" --cert-dir="$d/certs" \
    --client-ca-file="$d/ca.crt" --token-auth-file="$d/tokens.csv" \
    --authorization-mode=RBAC "$admission" \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none --allow-privileged=true \
    --kubelet-client-certificate="$d/kubelet-client.crt" --kubelet-client-key="$d/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    >"$d/kube-apiserver.log" 2>&1 &
  echo $! >"$d/kube-apiserver.pid"

  export Q8S_TEST_KUBE_URL="https://127.0.0.1:$api_port"
  export Q8S_TEST_KUBE_CA="$d/ca.crt"
  export Q8S_TEST_KUBE_TOKEN="$admin_token"
  export Q8S_TEST_KUBE_USER_TOKEN="$user_token"
  export Q8S_TEST_KUBECONFIG="$d/admin.kubeconfig"
  export Q8S_TEST_KUBECTL="$bin/kubectl"
  export Q8S_TEST_HELM="$bin/helm"
  export Q8S_TEST_MONITORING_CRDS="$(dirname "$bin")/crds"
  export Q8S_TEST_PROMETHEUS="$bin/prometheus" Q8S_TEST_PROMTOOL="$bin/promtool"
  export Q8S_TEST_DASHBOARDS_CHECK="$bin/q8s-dashboards"
  testbed_kubeconfig "$Q8S_TEST_KUBECONFIG" q8s-admin "$admin_token"
  local auth=(-fsS --cacert "$d/ca.crt" -H "Authorization: Bearer $admin_token")
  testbed_wait "$d/kube-apiserver.pid" curl "${auth[@]}" "$Q8S_TEST_KUBE_URL/readyz" &&
    testbed_wait "$d/kube-apiserver.pid" curl "${auth[@]}" "$Q8S_TEST_KUBE_URL/api/v1/namespaces/default" ||
    { testbed_logs; stop_kube_testbed; return 1; }

  if [ "$controllers" = 1 ]; then
    "$bin/kube-controller-manager" --kubeconfig="$Q8S_TEST_KUBECONFIG" \
      --authentication-kubeconfig="$Q8S_TEST_KUBECONFIG" --authorization-kubeconfig="$Q8S_TEST_KUBECONFIG" \
      --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
      --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
      >"$d/kube-controller-manager.log" 2>&1 &
    echo $! >"$d/kube-controller-manager.pid"
    # Ready when it has made the default namespace's ServiceAccount.
    testbed_wait "$d/kube-controller-manager.pid" \
      curl "${auth[@]}" "$Q8S_TEST_KUBE_URL/api/v1/namespaces/default/serviceaccounts/default" ||
      { testbed_logs; stop_kube_testbed; return 1; }
  fi

  local name
  for name in Q8S_TEST_KUBE_URL Q8S_TEST_KUBE_CA Q8S_TEST_KUBE_TOKEN Q8S_TEST_KUBE_USER_TOKEN \
    Q8S_TEST_KUBECONFIG Q8S_TEST_KUBECTL Q8S_TEST_HELM Q8S_TEST_MONITORING_CRDS \
    Q8S_TEST_PROMETHEUS Q8S_TEST_PROMTOOL Q8S_TEST_DASHBOARDS_CHECK; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done >"$d/env"
  echo "Kubernetes test bed ($("$bin/kube-apiserver" --version)) started at $Q8S_TEST_KUBE_URL ($d)" >&2
}

# Stops the processes recorded in data folder $1, newest first, by their ids.
stop_kube_testbed_in() {
  local saved=$testbed_dir name pid waited
  testbed_dir=$1
  for name in kube-controller-manager kube-apiserver etcd; do
    if testbed_alive "$testbed_dir/$name.pid"; then
      pid=$(cat "$testbed_dir/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true
      waited=0
      while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$testbed_dir/$name.pid"
  done
  testbed_dir=$saved
}

# Stops what start_kube_testbed started in this shell, and nothing else.
stop_kube_testbed() {
  if [ -n "${started_kube_testbed:-}" ]; then
    stop_kube_testbed_in "$started_kube_testbed"
    started_kube_testbed=
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
    start)
      start_kube_testbed >&2
      cat "$testbed_dir/env"
      ;;
    stop) stop_kube_testbed_in "$testbed_dir" ;;
    *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
  esac
fi
