#!/usr/bin/env bash
# The README's demo, on a fresh machine: brings up the local cluster (the first run builds
# Kubernetes v1.20.2 from Debian's source, ~8 min on 2 cores, and says so), builds the image,
# installs the operator with Helm, creates the hapair-kv pair (deploy/examples/kv.yaml), writes
# keys through the master Service, kills the master pod and prints the pair state until the
# standby is master, then reads every key back from the new master.
#
#   deploy/local/demo.sh          run it (leaves the cluster up: deploy/local/cluster.sh down)
#   deploy/local/demo.sh clean    remove the demo's release and namespace (the PVCs go with it)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NS=hapair-demo
KEYS=20
T0=${EPOCHREALTIME/,/.}
step() { printf '\n\033[1m== %s\033[0m (%.1fs)\n' "$*" "$(elapsed "$T0")"; }
elapsed() { awk -v a="$1" -v b="${EPOCHREALTIME/,/.}" 'BEGIN{printf "%.3f", b-a}'; }
# One status read: a field (`pair master`) or a jsonpath template of status fields.
pair() {
  local path="$1"; [[ "$path" == *"{"* ]] || path="{.$path}"
  kubectl -n "$NS" get hapair kv -o jsonpath="${path//\{./\{.status.}" 2>/dev/null || true
}

"$ROOT/deploy/local/cluster.sh" up
eval "$("$ROOT/deploy/local/cluster.sh" env)"
HELM="$("$ROOT/deploy/local/tools.sh")"

if [ "${1:-}" = clean ]; then
  "$HELM" uninstall hapair -n hapair-system || true
  kubectl delete namespace "$NS" --ignore-not-found
  exit 0
fi

step "image localhost/hapair:dev (operator, agent, hapair-kv)"
"$ROOT/deploy/local/images.sh"

step "helm install hapair (watching namespace $NS)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$HELM" upgrade --install hapair "$ROOT/charts/hapair" -n hapair-system --create-namespace \
  -f "$ROOT/deploy/local/values.yaml" --set watchNamespace="$NS" --wait --timeout 5m

step "kubectl apply -f deploy/examples/kv.yaml"
kubectl -n "$NS" apply -f "$ROOT/deploy/examples/kv.yaml"
until [[ "$(pair pairState)" =~ ^\((M\ SL|SL\ M)\)$ ]]; do sleep 0.2; done
kubectl -n "$NS" get hapair kv

ADDR="$(kubectl -n "$NS" get service kv -o jsonpath='{.spec.clusterIP}'):8080"
step "write $KEYS keys through Service kv ($ADDR): each acknowledged only once the standby has it"
RUN=$(date +%s)
for i in $(seq 1 "$KEYS"); do
  curl -fsS -X PUT --data "value-$i" "http://$ADDR/kv/demo-$RUN-$i" >/dev/null
done
echo "wrote $KEYS keys"

MASTER="$(pair master)"; PEER=$([ "$MASTER" = a ] && echo b || echo a)
step "kill the master: kubectl delete pod kv-$MASTER --grace-period=0 --force"
KILL=${EPOCHREALTIME/,/.}
kubectl -n "$NS" delete pod "kv-$MASTER" --grace-period=0 --force 2>/dev/null
LAST=""
while true; do
  NOW="$(pair '{.pairState} master={.master} priorities={.priorities}')"
  if [ "$NOW" != "$LAST" ]; then printf '  +%6.3fs  %s\n' "$(elapsed "$KILL")" "$NOW"; LAST="$NOW"; fi
  LABEL=$(kubectl -n "$NS" get pod "kv-$PEER" -o jsonpath='{.metadata.labels.hapair\.io/role}')
  [ "$(pair master)" = "$PEER" ] && [ "$LABEL" = master ] && break
  sleep 0.05
done
printf 'kv-%s is master %.3fs after the kill\n' "$PEER" "$(elapsed "$KILL")"

step "read every key back from the new master"
for i in $(seq 1 "$KEYS"); do
  for try in $(seq 1 100); do  # the Service may still be switching endpoints: retry 10 s
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/kv/demo-$RUN-$i" || true)
    [ "$code" = 200 ] && break
    [ "$code" = 404 ] && { echo "LOST: demo-$RUN-$i was acknowledged but is not on kv-$PEER" >&2; exit 1; }
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "cannot read demo-$RUN-$i (HTTP $code)" >&2; exit 1; }
done
echo "all $KEYS acknowledged keys are on kv-$PEER"

step "the killed member comes back as the standby"
until [[ "$(pair pairState)" =~ ^\((M\ SL|SL\ M)\)$ ]] && [ "$(pair master)" = "$PEER" ]; do sleep 0.2; done
kubectl -n "$NS" get hapair kv
printf '\ndemo done in %.0fs; clean up with: deploy/local/demo.sh clean\n' "$(elapsed "$T0")"
