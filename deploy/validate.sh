#!/usr/bin/env bash
# Validate the Kubernetes manifests under deploy/k8s against the API schemas
# (strict: unknown fields are errors) with kubernetes-validate, pinned, offline
# (it bundles the schemas). Used by .ci/run.
#   deploy/validate.sh                     # makes deploy/.venv once
set -euo pipefail
cd "$(dirname "$0")"
KUBE_VERSION=${KUBE_VERSION:-1.33.0}
if [ ! -x .venv/bin/kubernetes-validate ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
manifests=""
# The service (k8s/) and the sharded batch jobs (k8s/sharded/): in each, every file
# named in kustomization.yaml exists, and every manifest is listed there.
for dir in k8s k8s/sharded; do
  here=$(ls $dir/*.yaml | grep -v kustomization.yaml)
  for f in $here; do
    grep -q "  - $(basename "$f")" $dir/kustomization.yaml || { echo "$dir/kustomization.yaml does not list $f"; exit 1; }
  done
  for f in $(sed -n 's/^  - \(.*\.yaml\)$/\1/p' $dir/kustomization.yaml); do
    [ -f "$dir/$f" ] || { echo "$dir/kustomization.yaml lists $dir/$f, which does not exist"; exit 1; }
  done
  manifests="$manifests $here"
done
.venv/bin/kubernetes-validate --strict --kubernetes-version "$KUBE_VERSION" $manifests
echo "manifests valid for Kubernetes $KUBE_VERSION: $(echo $manifests | wc -w) files"
