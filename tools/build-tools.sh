#!/usr/bin/env bash
# Builds the Go tools the test bed needs into .tools/bin (control plane, kubelet, helm, promtool and
# the node's workload binary), once per pinned version.
#
# Each wrapper module under tools/go pins one upstream release; its go.mod/go.sum hash is
# the stamp, so a warm machine skips a build whose pins have not changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
stamps="$root/.tools/stamps"
mkdir -p "$bin" "$stamps"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

k8s_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$root/tools/go/kubernetes/go.mod")
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$k8s_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

# build MODULE_DIR OUTPUT PACKAGE [LDFLAGS]
build() {
  local module="$1" out="$2" pkg="$3" ldflags="${4:--s -w}"
  local stamp
  stamp="$stamps/$out-$(cat "$root/tools/go/$module/go.mod" "$root/tools/go/$module/go.sum" | sha256sum | cut -c1-16)"
  if [[ -x "$bin/$out" && -f "$stamp" ]]; then
    return 0
  fi
  echo "building $out from $pkg (first time only; several minutes)" >&2
  local start=$SECONDS
  (cd "$root/tools/go/$module" && go build -ldflags "$ldflags" -o "$bin/$out" "$pkg")
  rm -f "$stamps/$out-"*
  touch "$stamp"
  echo "built $out in $((SECONDS - start))s" >&2
}

build etcd etcd go.etcd.io/etcd/server/v3
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build kubernetes kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build kubernetes kubelet k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"
build helm helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=v3.22.0"
build prometheus promtool github.com/prometheus/prometheus/cmd/promtool

# The node's workload (and sandbox) image binary: our own source, so the stamp covers it.
workload_stamp="$stamps/signet-workload-$(cat "$root"/tools/workload/go.mod "$root"/tools/workload/*.go | sha256sum | cut -c1-16)"
if [[ ! -x "$bin/signet-workload" || ! -f "$workload_stamp" ]]; then
  (cd "$root/tools/workload" && go build -ldflags "-s -w" -o "$bin/signet-workload" .)
  rm -f "$stamps/signet-workload-"*
  touch "$workload_stamp"
fi
