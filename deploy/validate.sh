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
manifests=$(ls k8s/*.yaml | grep -v kustomization.yaml)
# Every file named in kustomization.yaml exists, and every manifest is listed there.
for f in $manifests; do
  grep -q "  - $(basename "$f")" k8s/kustomization.yaml || { echo "k8s/kustomization.yaml does not list $f"; exit 1; }
done
for f in $(sed -n 's/^  - \(.*\.yaml\)$/\1/p' k8s/kustomization.yaml); do
  [ -f "k8s/$f" ] || { echo "k8s/kustomization.yaml lists k8s/$f, which does not exist"; exit 1; }
done
.venv/bin/kubernetes-validate --strict --kubernetes-version "$KUBE_VERSION" $manifests
echo "manifests valid for Kubernetes $KUBE_VERSION: $(echo $manifests | wc -w) files"
