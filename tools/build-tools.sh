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

# The real cert-manager controller, for the end-to-end tests and the side-by-side bench:
# cert-manager's cmd/controller module is not served by the module proxy, so our own main
# (tools/go/certmanager/main.go) wires its registered controllers; the stamp covers it.
cm_stamp="$stamps/cert-manager-controller-$(cat "$root"/tools/go/certmanager/go.mod "$root"/tools/go/certmanager/go.sum "$root"/tools/go/certmanager/*.go | sha256sum | cut -c1-16)"
if [[ ! -x "$bin/cert-manager-controller" || ! -f "$cm_stamp" ]]; then
  echo "building cert-manager-controller (first time only; a few minutes)" >&2
  start=$SECONDS
  (cd "$root/tools/go/certmanager" && go build -ldflags "-s -w" -o "$bin/cert-manager-controller" .)
  rm -f "$stamps/cert-manager-controller-"*
  touch "$cm_stamp"
  echo "built cert-manager-controller in $((SECONDS - start))s" >&2
fi

# cert-manager's CRDs, for the external-issuer tests (installed only by the tests that need
# them). They come from cert-manager's Go module, pinned by tools/go/certmanager/go.mod (the
# controller above is built from the same version); deploy/crds/ is plain YAML
# today, and a file there that turns into a Helm template fails this step rather than being
# applied half-rendered.
cert_manager_version=$(cd "$root/tools/go/certmanager" && go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
cert_manager_crds="$root/.tools/crds/cert-manager"
if [[ ! -f "$cert_manager_crds/.version-$cert_manager_version" ]]; then
  module_dir=$(cd "$root/tools" && go mod download -json "github.com/cert-manager/cert-manager@$cert_manager_version" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  if grep -l '{{' "$module_dir"/deploy/crds/*.yaml; then
    echo "cert-manager $cert_manager_version: the CRDs above are Helm templates; render them first" >&2
    exit 1
  fi
  rm -rf "$cert_manager_crds"
  mkdir -p "$cert_manager_crds"
  cp "$module_dir"/deploy/crds/*.yaml "$cert_manager_crds/"
  chmod u+w "$cert_manager_crds"/*.yaml
  touch "$cert_manager_crds/.version-$cert_manager_version"
fi
