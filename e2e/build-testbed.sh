#!/usr/bin/env bash
# Builds the Kubernetes test bed from Go modules: the q8s-kube multi-call binary
# of e2e/kube (kube-apiserver, etcd, kubectl, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy), helm, containerd with its runc shim and
# ctr, CoreDNS (e2e/dns), Prometheus and promtool, q8s-dashboards (e2e/dashboards); and the Prometheus Operator's CRDs beside them
# (../crds). Prints the folder holding the commands on stdout.
#
# The result lives outside the clone, in a folder named by the content hash of
# what decides it (e2e/kube's go.mod, go.sum and main.go, the helm version, the
# Go version and the build recipe), so a second run on the same machine only
# checks that folder. Safe to run again; an interrupted build leaves no folder.
#
#   Q8S_TESTBED_CACHE   where the builds live (default: $XDG_CACHE_HOME/q8s/testbed)
#   Q8S_GO_JOBS         packages Go compiles at once (default 1: see docs/testing.md)
set -euo pipefail
e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module="$e2e/kube"

# helm v3, installed as its own module: it selects k8s.io libraries of its own.
helm_version=v3.22.0
# containerd 2 for the node (e2e/start-node.sh), also its own module: only
# containerd 2 keeps a sandbox's oom_score_adj at its own when told to (these
# VMs refuse a lower one), which Debian's containerd 1.6 does not.
containerd_version=v2.4.2
# The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule), taken from
# its Go module: the chart makes those objects only where they exist.
prometheus_operator_version=v0.85.0
# Prometheus and promtool, for the dashboards' queries and the alert rules'
# tests; without service discovery (remove_all_sd): the tests give targets.
prometheus_version=v0.316.0
# Bump when the build flags below change, so the hash changes with them.
recipe=1

export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "build-testbed: Go is not installed" >&2; exit 1; }

hash=$(
  {
    cat "$module/go.mod" "$module/go.sum" "$module/main.go"
    cat "$e2e/dns/go.mod" "$e2e/dns/go.sum" "$e2e/dns/main.go"
    cat "$e2e/dashboards/go.mod" "$e2e/dashboards/go.sum" "$e2e/dashboards/main.go"
    echo "helm $helm_version containerd $containerd_version prometheus-operator $prometheus_operator_version"
    echo "prometheus $prometheus_version"
    echo "recipe $recipe $(go env GOVERSION GOOS GOARCH)"
  } | sha256sum | cut -c1-16
)
cache="${Q8S_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/q8s/testbed}"
bin="$cache/$hash/bin"
commands=(kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kubelet kube-proxy)

if [ -f "$cache/$hash/complete" ]; then
  echo "test bed already built: $bin" >&2
  echo "$bin"
  exit 0
fi

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$module/go.mod")
minor=${k8s_version#v1.}
minor=${minor%%.*}
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"

# What hack/lib/version.sh stamps into the release binaries, so /version and
# `kubectl version` answer the real version.
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
jobs=${Q8S_GO_JOBS:-1}

echo "building the test bed ($k8s_version, helm $helm_version, go -p $jobs) into $cache/$hash" >&2
start=$SECONDS
(cd "$module" && nice -n 19 go build -p "$jobs" -mod=readonly -trimpath -ldflags "$ldflags" \
  -o "$work/bin/q8s-kube" .)
echo "q8s-kube built in $((SECONDS - start)) s" >&2
for name in "${commands[@]}"; do
  ln -s q8s-kube "$work/bin/$name"
done

start=$SECONDS
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
(cd "$work" && GOBIN="$work/bin" nice -n 19 go install -p "$jobs" -trimpath -ldflags "$helm_ldflags" \
  "helm.sh/helm/v3/cmd/helm@$helm_version")
echo "helm built in $((SECONDS - start)) s" >&2

start=$SECONDS
(cd "$work" && GOBIN="$work/bin" nice -n 19 go install -p "$jobs" -trimpath -ldflags "-s -w" \
  -tags "no_btrfs no_devmapper no_zfs" \
  "github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version" \
  "github.com/containerd/containerd/v2/cmd/ctr@$containerd_version")
echo "containerd built in $((SECONDS - start)) s" >&2

# The cluster DNS, its own module too (e2e/dns: CoreDNS with the plugins it needs).
start=$SECONDS
(cd "$e2e/dns" && nice -n 19 go build -p "$jobs" -mod=readonly -trimpath -ldflags "-s -w" \
  -o "$work/bin/coredns" .)
echo "coredns built in $((SECONDS - start)) s" >&2

# The dashboards' check against Grafana's typed model (e2e/dashboards).
start=$SECONDS
(cd "$e2e/dashboards" && nice -n 19 go build -p "$jobs" -mod=readonly -trimpath -ldflags "-s -w" \
  -o "$work/bin/q8s-dashboards" .)
echo "q8s-dashboards built in $((SECONDS - start)) s" >&2

start=$SECONDS
(cd "$work" && GOBIN="$work/bin" nice -n 19 go install -p "$jobs" -trimpath -ldflags "-s -w" \
  -tags remove_all_sd \
  "github.com/prometheus/prometheus/cmd/prometheus@$prometheus_version" \
  "github.com/prometheus/prometheus/cmd/promtool@$prometheus_version")
echo "prometheus and promtool built in $((SECONDS - start)) s" >&2

mkdir -p "$work/crds"
source=$(cd "$work" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$prometheus_operator_version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
for kind in servicemonitors prometheusrules; do
  cp "$source/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$work/crds/"
done

"$work/bin/kube-apiserver" --version >&2
touch "$work/complete"
rm -rf "${cache:?}/$hash"
mv "$work" "$cache/$hash"
trap - EXIT
echo "test bed built: $bin" >&2
echo "$bin"
