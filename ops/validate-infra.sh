#!/usr/bin/env bash
# Check the infrastructure files offline: the CloudFormation template with cfn-lint (errors,
# warnings and informational findings all fail), each Kubernetes manifest against the
# schemas kubernetes-validate ships, strictly (unknown fields fail), compose.yaml against the
# Compose specification's schema (check-jsonschema's copy), and the HAProxy configuration
# with haproxy -c when haproxy is installed. Needs no network once
# the tools are installed (the dev extras install them; this installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the manifests must work on.
K8S_VERSION=1.30.0

[ -x .venv/bin/python ] || python3 -m venv .venv
if [ ! -x .venv/bin/cfn-lint ] || [ ! -x .venv/bin/kubernetes-validate ] \
    || [ ! -x .venv/bin/check-jsonschema ]; then
    .venv/bin/pip install -q 'cfn-lint>=1.58' 'kubernetes-validate>=1.37' 'check-jsonschema>=0.29'
fi
echo "== $(.venv/bin/cfn-lint --version), kubernetes-validate $(.venv/bin/kubernetes-validate --version 2>&1 | tail -n 1) (Kubernetes $K8S_VERSION)"

status=0
for template in ops/aws/*.yaml; do
    if .venv/bin/cfn-lint --include-checks I -- "$template"; then
        echo "ok   $template"
    else
        echo "FAIL $template" >&2
        status=1
    fi
done
for manifest in ops/k8s/*.yaml; do
    [ "$(basename "$manifest")" = kustomization.yaml ] && continue
    if .venv/bin/kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$manifest"; then
        echo "ok   $manifest"
    else
        echo "FAIL $manifest" >&2
        status=1
    fi
done
if .venv/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml >/dev/null; then
    echo "ok   compose.yaml"
else
    echo "FAIL compose.yaml" >&2
    status=1
fi
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
if [ -x "$haproxy" ]; then
    for servers in ops/haproxy/compose-servers.cfg; do
        if CIVICPULSE_LB_BIND=127.0.0.1:8080 "$haproxy" -c -q -f ops/haproxy/haproxy.cfg -f "$servers"; then
            echo "ok   ops/haproxy/haproxy.cfg with $servers"
        else
            echo "FAIL ops/haproxy/haproxy.cfg with $servers" >&2
            status=1
        fi
    done
fi
exit "$status"
