#!/usr/bin/env bash
# The same tests on kind, for a machine with a container engine (docker, or
# podman with KIND_EXPERIMENTAL_PROVIDER=podman). kubectl and helm still come
# from e2e/build-testbed.sh; kind itself is installed from its Go module.
#
#   eval "$(e2e/kind.sh start)"     create the cluster (or find it) and print the exports
#   cargo test -p q8s-testbed       the tests see the same Q8S_TEST_* variables as on the test bed
#   e2e/kind.sh stop                delete the cluster
#
#   Q8S_KIND_CLUSTER   cluster name (default q8s-test)
#   Q8S_KIND_IMAGE     node image (default kindest/node:<the version e2e/kube pins>)
set -euo pipefail
e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kind_version=v0.33.0
cluster=${Q8S_KIND_CLUSTER:-q8s-test}
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$e2e/kube/go.mod")
image=${Q8S_KIND_IMAGE:-kindest/node:$k8s_version}
dir="${XDG_CACHE_HOME:-$HOME/.cache}/q8s/kind-$cluster"

bin=$("$e2e/build-testbed.sh")
kind="$(go env GOPATH)/bin/kind"
if ! "$kind" version 2>/dev/null | grep -q "${kind_version#v}"; then
  echo "installing kind $kind_version" >&2
  GOTOOLCHAIN=local CGO_ENABLED=0 nice -n 19 go install "sigs.k8s.io/kind@$kind_version" >&2
fi

case "${1:-start}" in
  start)
    mkdir -p "$dir"
    if ! "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
      "$kind" create cluster --name "$cluster" --image "$image" --wait 120s >&2
    fi
    "$kind" get kubeconfig --name "$cluster" >"$dir/admin.kubeconfig"
    chmod 600 "$dir/admin.kubeconfig"
    k() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
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
      "Q8S_TEST_KUBECTL=$bin/kubectl" "Q8S_TEST_HELM=$bin/helm"; do
      printf 'export %s=%q\n' "${pair%%=*}" "${pair#*=}"
    done
    ;;
  stop)
    "$kind" delete cluster --name "$cluster" >&2
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
