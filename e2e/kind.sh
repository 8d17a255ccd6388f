#!/usr/bin/env bash
# q8s on kind, for a machine with a container engine (docker, or podman with
# KIND_EXPERIMENTAL_PROVIDER=podman). kubectl and helm come from
# e2e/build-testbed.sh; kind itself is installed from its Go module.
#
#   e2e/kind.sh install   build both images (Dockerfile.worker, Dockerfile.operator),
#                         create the cluster (or find it), load the images, helm install
#                         the chart with its example, wait for the example QCluster to be
#                         Ready, enqueue a task from outside and check its result
#   eval "$(e2e/kind.sh start)"
#                         create the cluster (or find it) and print the exports the
#                         operator's tests read, as the test bed gives them:
#                         cargo test -p q8s-operator then runs on kind
#   e2e/kind.sh stop      delete the cluster
#
#   Q8S_KIND_CLUSTER   cluster name (default q8s-test)
#   Q8S_KIND_IMAGE     node image (default kindest/node:<the version e2e/kube pins>)
#   DOCKER             the container engine's command (default docker)
set -euo pipefail
e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kind_version=v0.33.0
cluster=${Q8S_KIND_CLUSTER:-q8s-test}
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$e2e/kube/go.mod")
image=${Q8S_KIND_IMAGE:-kindest/node:$k8s_version}
dir="${XDG_CACHE_HOME:-$HOME/.cache}/q8s/kind-$cluster"

kind="$(go env GOPATH)/bin/kind"
if ! "$kind" version 2>/dev/null | grep -q "${kind_version#v}"; then
  echo "installing kind $kind_version" >&2
  GOTOOLCHAIN=local CGO_ENABLED=0 nice -n 19 go install "sigs.k8s.io/kind@$kind_version" >&2
fi
bin=""
# kubectl and helm, for the commands that talk to the cluster.
tools() { bin=$("$e2e/build-testbed.sh"); }

repo=$(cd "$e2e/.." && pwd)
docker=${DOCKER:-docker}
k() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }

# Creates the cluster unless it exists, and writes its kubeconfig.
cluster_up() {
  mkdir -p "$dir"
  if ! "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    "$kind" create cluster --name "$cluster" --image "$image" --wait 120s >&2
  fi
  "$kind" get kubeconfig --name "$cluster" >"$dir/admin.kubeconfig"
  chmod 600 "$dir/admin.kubeconfig"
}

# The chart's whole path on kind: images, install, the example, one task.
install() {
  local version revision which namespace=q8s-system
  version=$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/q8s/Chart.yaml")
  revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
  for which in worker operator; do
    echo "== building q8s-$which:$version" >&2
    "$docker" build -f "$repo/Dockerfile.$which" -t "q8s-$which:$version" \
      --build-arg VERSION="$version" --build-arg REVISION="$revision" "$repo" >&2
  done
  cluster_up
  for which in worker operator; do
    "$kind" load docker-image --name "$cluster" "q8s-$which:$version" >&2
  done
  echo "== helm install" >&2
  "$bin/helm" --kubeconfig "$dir/admin.kubeconfig" upgrade --install q8s "$repo/charts/q8s" \
    --namespace "$namespace" --create-namespace --set examples.enabled=true \
    --set image.pullPolicy=Never --wait --timeout 5m >&2
  k -n "$namespace" wait --for=condition=Ready qcluster/example --timeout=5m >&2
  k -n "$namespace" get qclusters >&2

  echo "== a task from outside" >&2
  (cd "$repo" && cargo build --quiet -p q8s)
  local q8s="${CARGO_TARGET_DIR:-$repo/target}/debug/q8s" password port id result
  k -n "$namespace" get secret example-signing-key -o jsonpath='{.data.keys}' | base64 -d >"$dir/example.key"
  password=$(k -n "$namespace" get secret example-redis -o jsonpath='{.data.password}' | base64 -d)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  k -n "$namespace" port-forward svc/example-redis "$port:6379" >/dev/null &
  forward=$!
  trap 'kill "$forward" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  local settings=(--set "broker=redis://:$password@127.0.0.1:$port/0" --set name=example)
  id=$("$q8s" "${settings[@]}" --set secret_key_file="$dir/example.key" --set cached=600 \
    enqueue q8s.echo "hello from kind")
  for _ in $(seq 60); do
    result=$("$q8s" "${settings[@]}" --set cached=true fetch "$id" 2>/dev/null || true)
    [ -n "$result" ] && break
    sleep 1
  done
  case "$result" in
    *"hello from kind"*) echo "the example ran task $id: $result" >&2 ;;
    *) echo "no result for task $id after 60 s (got '$result')" >&2; kill "$forward"; return 1 ;;
  esac
  kill "$forward" 2>/dev/null || true
  trap - EXIT
}

forward=""
case "${1:-start}" in
  install) tools; install ;;
  start)
    tools
    cluster_up
    # kind has no token file: the user without grants is a ServiceAccount of a namespace
    # of its own, and RBAC matches its user name as the tests bind it.
    k create namespace q8s-testbed --dry-run=client -o yaml | k apply -f - >/dev/null
    k -n q8s-testbed create serviceaccount q8s-tester --dry-run=client -o yaml | k apply -f - >/dev/null
    token=$(k -n q8s-testbed create token q8s-tester --duration=24h)
    url=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')
    k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
      base64 -d >"$dir/ca.crt"
    for pair in "Q8S_TEST_KUBECONFIG=$dir/admin.kubeconfig" "Q8S_TEST_KUBE_URL=$url" \
      "Q8S_TEST_KUBE_CA=$dir/ca.crt" "Q8S_TEST_KUBE_USER_TOKEN=$token" \
      "Q8S_TEST_KUBE_USER=system:serviceaccount:q8s-testbed:q8s-tester" \
      "Q8S_TEST_KUBECTL=$bin/kubectl" "Q8S_TEST_HELM=$bin/helm" \
      "Q8S_TEST_MONITORING_CRDS=$(dirname "$bin")/crds" \
      "Q8S_TEST_PROMETHEUS=$bin/prometheus" "Q8S_TEST_PROMTOOL=$bin/promtool" \
      "Q8S_TEST_DASHBOARDS_CHECK=$bin/q8s-dashboards"; do
      printf 'export %s=%q\n' "${pair%%=*}" "${pair#*=}"
    done
    ;;
  stop)
    "$kind" delete cluster --name "$cluster" >&2
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 [install|start|stop]" >&2; exit 2 ;;
esac
