#!/usr/bin/env bash
# Refresh the vendored browser libraries from the npm registry (ops/vendor.lock): each
# package's tarball is fetched with `npm pack`, checked against the sha512 integrity the lock
# file records (a tarball that differs is refused), and the listed files are copied into
# their folder, whose SHA256SUMS the test suite checks. Needs Node's npm; running the
# service does not. `--check` only verifies the vendored files against their SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."
folders=$(grep -v '^#' ops/vendor.lock | awk 'NF { print $4 }' | sort -u)
if [ "${1:-}" = "--check" ]; then
    for dest in $folders; do (cd "$dest" && sha256sum --check --quiet SHA256SUMS); done
    echo "vendored files match their SHA256SUMS"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -v '^#' ops/vendor.lock | while read -r name version integrity dest files; do
    [ -n "$name" ] || continue
    tarball=$(cd "$work" && npm pack --silent "$name@$version")
    actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "$name@$version: tarball integrity $actual, expected $integrity" >&2
        exit 1
    fi
    mkdir -p "$work/$name" "$dest"
    tar -xzf "$work/$tarball" -C "$work/$name"
    for spec in $files; do
        cp "$work/$name/${spec%%:*}" "$dest/${spec##*:}"
    done
    echo "$name@$version: integrity ok"
done
for dest in $folders; do
    (cd "$dest" && sha256sum $(ls | grep -v '^SHA256SUMS$' | sort) > SHA256SUMS)
    echo "wrote $dest/SHA256SUMS"
done
