#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 cluster on this machine: no docker, no systemd, no internet.
#   etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kubelet + kube-proxy (iptables)
#   + containerd 1.6 (CRI) + runc + CNI bridge (cni0, pods in 10.88.0.0/16), images built locally.
# Everything comes from the Debian archive (Kubernetes is built from Debian's own source package).
#
#   cluster.sh up          start (idempotent: if everything runs it only prints the env); builds first if needed
#   cluster.sh down        stop everything it started; clean pods, netns, mounts, cgroups, iptables rules
#   cluster.sh status      pids, RSS, node and PV pool state
#   cluster.sh env         print `export KUBECONFIG=...` (and PATH with the matching kubectl): eval "$(cluster.sh env)"
#   cluster.sh build       build the Kubernetes binaries into the cache (~8 min cold on 2 cores; idempotent)
#   cluster.sh pv-reclaim  make every Released PV of the pool Available again (wipes its directory)
#
# Env: HAPAIR_K8S_CACHE (default ~/.cache/hapair/k8s-v1.20.2), HAPAIR_LOCAL_ROOT (default /var/lib/hapair-local).
#
# Network rule: nothing may leave the machine. The node address is on lo, the Service CIDR is routed
# to lo, pods are fenced in (mangle FORWARD drop on cni0, no masquerade, nameserver 127.0.0.1), and no
# component may call a cloud metadata endpoint (AWS_EC2_METADATA_DISABLED=true).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SELF="$HERE/$(basename "$0")"
CACHE="${HAPAIR_K8S_CACHE:-$HOME/.cache/hapair/k8s-v1.20.2}"
BIN="$CACHE/bin"; SRC="$CACHE/src"
RC="${HAPAIR_LOCAL_ROOT:-/var/lib/hapair-local}"
RUN="$RC/run"; LOGS="$RUN/logs"; CERTS="$RUN/certs"; CONF="$RUN/conf"; IMG="$RC/images"; PV_DIR="$RC/pv"
API_PORT=16443; ETCD_PORT=12379
NODE_NAME=node1
NODE_IP=10.87.255.1                     # node IP: an extra address on lo (this kernel has no dummy netdev)
SVC_CIDR=10.0.0.0/24; POD_CIDR=10.88.0.0/16; CNI_GW=10.88.0.1
PAUSE_IMAGE=localhost/pause:3.4.1; BUSYBOX_IMAGE=localhost/busybox:local
CTR_SOCK=/run/containerd/containerd.sock
CNI_NAME=hapair-local; CNI_CONF=/etc/cni/net.d/10-hapair-local.conflist; CNI_IPAM=/run/hapair-local/cni-ipam
PV_COUNT=24; PV_LABEL=hapair.io/local-pv
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
K8S_SRC_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_TREE="$SRC/kubernetes-1.20.2"
PAUSE_C="$K8S_TREE/build/pause/linux/pause.c"
COMPONENTS="pv-reclaimer kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd"
PACKAGES_UP="containerd runc containernetworking-plugins iptables iproute2 conntrack busybox-static gcc libc6-dev openssl curl"
PACKAGES_BUILD="golang-1.19-go rsync make"

export KUBECONFIG="$RUN/kubeconfig"
export AWS_EC2_METADATA_DISABLED=true   # every component: never probe a cloud metadata endpoint
export PATH="$BIN:$PATH"                 # kubectl v1.20.2 from Debian's kubernetes-client (matches the server)

log() { printf '[cluster.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# A component is alive if its pid file names a live process whose command line mentions the component
# (guards against a stale pid file whose pid was reused after a reboot or a killed session).
alive() {
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}

# start NAME CMD...: detached (own session, so a ^C or the caller's process-group kill spares it),
# stdout/stderr to $LOGS/NAME.log, and without the lock fd (else the daemon would hold the lock forever).
start() {
  local name=$1; shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$RUN/$name.pid"
}

lock() { mkdir -p "$RC"; exec 9> "$RC/.lock"; flock 9; }

# need_packages PKG...: install the Debian packages that are missing; `apt-get update` only when needed
need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

# ============================================================================================ build
# Kubernetes v1.20.2 from Debian bookworm's own `kubernetes` SOURCE package (vendored deps inside), with
# Go 1.19 from Debian; etcd 3.4.23 from Debian's etcd-server and kubectl from Debian's kubernetes-client
# (both binary packages, unpacked into the cache only). No Go proxy, no host other than the Debian archive.
fetch_src() {
  local V="$K8S_TREE/vendor/github.com/modern-go/reflect2"
  # reflect2 1.0.2 ships go_above_118.go: its presence means the tree is unpacked AND patched
  [ -f "$V/go_above_118.go" ] && [ -f "$PAUSE_C" ] && return 0
  log "fetching the kubernetes $K8S_SRC_VERSION source package from the Debian archive"
  mkdir -p "$SRC"; cd "$SRC"
  # a private apt config that adds deb-src to the machine's own Debian sources (/etc/apt stays untouched)
  mkdir -p apt/parts apt/lists/partial apt/cache/archives/partial
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types: deb$/Types: deb deb-src/' "$f" > "apt/parts/$(basename "$f")"
  done
  : > apt/sources.list
  [ -f /etc/apt/sources.list ] && sed -n 's/^deb \(.*debian.*\)/deb-src \1/p' /etc/apt/sources.list > apt/sources.list
  local APTO=(-o Dir::Etc::sourcelist="$SRC/apt/sources.list" -o Dir::Etc::sourceparts="$SRC/apt/parts"
              -o Dir::State::Lists="$SRC/apt/lists" -o Dir::Cache="$SRC/apt/cache")
  apt-get "${APTO[@]}" update -q >/dev/null 2>&1
  apt-get "${APTO[@]}" source --download-only "kubernetes=$K8S_SRC_VERSION" >/dev/null 2>&1
  rm -rf "$K8S_TREE" && tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz   # full tree incl. vendor/
  # the vendored reflect2 1.0.1 crashes under Go >= 1.18 ("fatal error: fault ... aeshashbody ...
  # reflect2.(*UnsafeMapType).UnsafeIterate" on the first custom-resource write): use Debian's 1.0.2
  debs golang-github-modern-go-reflect2-dev
  rm -f "$V"/*.go "$V"/*.s
  cp debx/usr/share/gocode/src/github.com/modern-go/reflect2/*.go debx/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$V"/
  rm -f "$V"/*_test.go
}

# debs PKG...: download Debian binary packages and unpack them into $SRC/debx (never installed)
debs() {
  mkdir -p "$SRC/debx"
  (cd "$SRC" && apt-get download "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download "$@" >/dev/null; })
  local p; for p in "$@"; do dpkg -x "$(ls -t "$SRC/${p}"_*.deb | head -1)" "$SRC/debx"; done
}

build() {
  local missing=() b
  for b in $K8S_CMDS; do [ -x "$BIN/$b" ] || missing+=("cmd/$b"); done
  if [ ${#missing[@]} -eq 0 ] && [ -x "$BIN/etcd" ] && [ -x "$BIN/kubectl" ] && [ -f "$PAUSE_C" ]; then
    log "Kubernetes binaries present in $BIN"; return 0
  fi
  local t0; t0=$(now)
  mkdir -p "$BIN" "$SRC"
  need_packages $PACKAGES_BUILD
  if [ ! -x "$BIN/etcd" ] || [ ! -x "$BIN/kubectl" ]; then
    log "unpacking etcd and kubectl from Debian's etcd-server and kubernetes-client packages"
    debs etcd-server kubernetes-client
    cp "$SRC/debx/usr/bin/etcd" "$BIN/etcd"; cp "$SRC/debx/usr/bin/kubectl" "$BIN/kubectl"
  fi
  fetch_src
  if [ ${#missing[@]} -gt 0 ]; then
    log "building ${missing[*]} from source: the first build takes ~8 minutes on 2 cores (log: $SRC/make.log)"
    (cd "$K8S_TREE" && PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS= GOCACHE="$SRC/gocache" \
      exec make WHAT="${missing[*]}" > "$SRC/make.log" 2>&1 9>&-) &
    local mk=$! i=0
    while kill -0 "$mk" 2>/dev/null; do
      sleep 1; i=$((i + 1))
      [ $((i % 30)) = 0 ] && log "  still building (${i}s): $(grep '^+++' "$SRC/make.log" | tail -1 | cut -c1-70)"
    done
    wait "$mk" || { tail -30 "$SRC/make.log" >&2; die "kubernetes build failed (log: $SRC/make.log)"; }
    for b in "${missing[@]}"; do cp "$K8S_TREE/_output/bin/$(basename "$b")" "$BIN/"; done
  fi
  log "Kubernetes $("$BIN/kube-apiserver" --version | awk '{print $2}') binaries ready in $BIN ($(since "$t0")s)"
}

# ============================================================================================ down
down() {
  # 0. the PV reclaimer first (it must not wipe anything while pods are torn down)
  if alive pv-reclaimer; then kill -- -"$(cat "$RUN/pv-reclaimer.pid")" 2>/dev/null || true; fi
  rm -f "$RUN/pv-reclaimer.pid"
  # 1. graceful: let kubelet tear pods down (CNI DEL, volume unmounts) while everything still runs
  if alive kubelet && alive kube-apiserver; then
    kubectl delete pods --all -A --grace-period=1 --wait=true --timeout=40s >/dev/null 2>&1 || true
    log "down: pods deleted"
  fi
  stop_pids() {  # SIGTERM all given components at once, SIGKILL whatever is left after 5s
    local pids=() p
    for p in "$@"; do alive "$p" && pids+=("$(cat "$RUN/$p.pid")"); rm -f "$RUN/$p.pid"; done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${pids[@]}" 2>/dev/null || true
  }
  stop_pids kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver
  stop_pids etcd
  # 2. whatever containers are left in containerd's k8s.io namespace, then containerd itself
  if alive containerd; then
    ctr_clean
    stop_pids containerd
  fi
  rm -f "$RUN/containerd.pid"
  kill_orphans
  log "down: processes stopped"
  # 3. mounts made for pods: kubelet volumes, CNI netns, container rootfs/shm (deepest first)
  { grep -oE ' (/var/lib/kubelet|/run/netns/cni-|/run/containerd/io.containerd|/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes)[^ ]*' /proc/mounts || true; } \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  ip link delete cni0 2>/dev/null || true
  ip route del "$SVC_CIDR" dev lo 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  rm -rf "$CNI_IPAM" /var/lib/kubelet "$CNI_CONF"
  # kubelet's QoS cgroup trees (/kubepods/...) in every v1 hierarchy (empty once all containers are gone)
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    if [ -d "$h" ]; then find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  log "down: mounts, netns, cgroups cleaned"
  # 4. iptables: kube-proxy's, kubelet's and CNI's chains (KUBE-*, CNI-*) and our own guard rule
  if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  iptables -t mangle -D FORWARD -i cni0 ! -o cni0 -j DROP 2>/dev/null || true
  ipt_clean iptables; ipt_clean ip6tables
  restore_sysctl net/ipv4/ip_forward; restore_sysctl net/bridge/bridge-nf-call-iptables
  rm -rf "$RUN/etcd-data"
  log "down: stopped"
}

# ipt_clean iptables|ip6tables: remove every jump from a built-in chain to a KUBE-*/CNI-* chain, then those chains
ipt_clean() {
  command -v "$1" >/dev/null || return 0
  local ipt=$1 t rule ch
  for t in filter nat mangle; do
    { "$ipt-save" -t $t 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE|CNI)-' || true; } \
      | while read -r rule; do eval "$ipt -t $t -D ${rule#-A }" 2>/dev/null || true; done
    for ch in $("$ipt-save" -t $t 2>/dev/null | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p' || true); do $ipt -t $t -F "$ch" 2>/dev/null || true; done
    for ch in $("$ipt-save" -t $t 2>/dev/null | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p' || true); do $ipt -t $t -X "$ch" 2>/dev/null || true; done
  done
}

set_sysctl() {  # set_sysctl KEY VALUE: remembers the original value for down
  local f="/proc/sys/$1" o="$RUN/sysctl.$(echo "$1" | tr / .)"
  [ -f "$f" ] || return 0
  [ -f "$o" ] || cat "$f" > "$o"
  echo "$2" > "$f"
}
restore_sysctl() {
  local f="/proc/sys/$1" o="$RUN/sysctl.$(echo "$1" | tr / .)"
  [ -f "$o" ] || return 0
  [ -f "$f" ] && cat "$o" > "$f"
  rm -f "$o"
}

# Containers whose containerd died under them (e.g. the session that started the cluster was killed):
# containerd's state dir names each container's main process (init.pid); its parent is the pod's shim.
kill_orphans() {
  local f pid ppid shims=()
  for f in /run/containerd/io.containerd.runtime.v2.task/k8s.io/*/init.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); ppid=$(awk '/^PPid:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$ppid" ] || continue
    [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = containerd-shim ] || continue   # comm is cut to 15 chars
    kill -9 "$pid" 2>/dev/null || true; shims+=("$ppid")
  done
  [ ${#shims[@]} -eq 0 ] || kill -9 "${shims[@]}" 2>/dev/null || true
}

# kill and remove every task and container in containerd's k8s.io namespace (images stay)
ctr_clean() {
  local t c
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  sleep 0.5
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do ctr -n k8s.io containers delete "$c" >/dev/null 2>&1 || true; done
}

# ======================================================================================= PV pool
# Storage: StorageClass `local` (no provisioner) and a pool of $PV_COUNT static hostPath PVs
# hapair-pv-00.., 1Gi each, ReadWriteOnce, directories under $PV_DIR. Reclaim policy is Retain, and
# reuse is done here, not by Kubernetes: `Recycle` would need a recycler pod image, and `Delete` has
# no deleter for hostPath. When a claim goes away its PV turns Released; the pv-reclaimer component
# (a `kubectl get pv -w` loop started by `up`) then wipes the PV's directory and removes
# spec.claimRef, so the PV is Available again within a second. `cluster.sh pv-reclaim` does one
# pass by hand (it also runs at every `up`). A fresh `up` starts with an empty etcd and empty PVs.
ensure_storage() {
  local i n
  mkdir -p "$PV_DIR"
  {
    printf 'apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: local}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\nreclaimPolicy: Retain\n'
    for i in $(seq 0 $((PV_COUNT - 1))); do
      n=$(printf 'hapair-pv-%02d' "$i")
      # 0777: member pods run as non-root and hostPath volumes get no fsGroup ownership change
      mkdir -p "$PV_DIR/$n"; chmod 0777 "$PV_DIR/$n"
      printf -- '---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {name: %s, labels: {%s: "true"}}\n' "$n" "$PV_LABEL"
      printf 'spec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n'
      printf '  storageClassName: local\n  hostPath: {path: %s, type: Directory}\n' "$PV_DIR/$n"
    done
  } | kubectl apply -f - >/dev/null
}

reclaim_one() {  # reclaim_one PV_NAME HOST_PATH
  case "$2" in "$PV_DIR"/hapair-pv-[0-9][0-9]) ;; *) log "pv-reclaim: refusing to wipe $2 ($1)"; return 0 ;; esac
  find "$2" -mindepth 1 -delete 2>/dev/null || true
  chmod 0777 "$2"
  kubectl patch pv "$1" --type=json -p='[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null 2>&1 \
    && log "pv-reclaim: $1 wiped and Available again"
}

pv_reclaim() {
  kubectl get pv -l "$PV_LABEL" -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name} {.spec.hostPath.path}{"\n"}{end}' \
    | while read -r n p; do [ -n "$n" ] && reclaim_one "$n" "$p"; done
}

pv_reclaimer() {  # long-running (component `pv-reclaimer`): reclaim on every watch event, re-watch when the watch ends
  while :; do
    kubectl get pv -l "$PV_LABEL" -w --no-headers -o custom-columns=N:.metadata.name,P:.status.phase,H:.spec.hostPath.path 2>/dev/null \
      | while read -r n ph p; do [ "$ph" = Released ] && reclaim_one "$n" "$p"; done || true
    sleep 1
  done
}

# ========================================================================================= images
# pause (built from the Kubernetes source tree's pause.c) and busybox (Debian's busybox-static);
# tarballs are cached in $IMG and re-imported at every up (containerd keeps them across down anyway).
ensure_images() {
  if [ ! -f "$IMG/pause.tar" ] || [ ! -f "$IMG/busybox.tar" ]; then
    [ -f "$PAUSE_C" ] || fetch_src
    mkdir -p "$IMG"
    gcc -Os -static -DVERSION=3.4.1-local -o "$IMG/pause" "$PAUSE_C"
    rm -rf "$IMG/pause-root" "$IMG/bb-root"; mkdir -p "$IMG/pause-root" "$IMG"/bb-root/{bin,etc,tmp,data,www,proc,sys,dev}
    cp "$IMG/pause" "$IMG/pause-root/pause"
    cp /bin/busybox "$IMG/bb-root/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$IMG/bb-root/bin/$a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$IMG/bb-root/etc/passwd"; echo 'root:x:0:' > "$IMG/bb-root/etc/group"
    echo 'hello from busybox httpd' > "$IMG/bb-root/www/index.html"
    "$HERE/mkimage.sh" "$IMG/pause-root" "$PAUSE_IMAGE" "$IMG/pause.tar" '["/pause"]' null
    "$HERE/mkimage.sh" "$IMG/bb-root" "$BUSYBOX_IMAGE" "$IMG/busybox.tar" null '["sh"]'
  fi
  ctr -n k8s.io images import "$IMG/pause.tar" >/dev/null
  ctr -n k8s.io images import "$IMG/busybox.tar" >/dev/null
}

# ========================================================================================== certs
ensure_certs() {
  if [ ! -f "$CERTS/admin.crt" ]; then
    log "generating certificates"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hapair-local-ca" \
      -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$NODE_IP" > "$CERTS/server.ext"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$CERTS/server.key" -out "$CERTS/server.csr" 2>/dev/null
    openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
      -days 3650 -extfile "$CERTS/server.ext" -out "$CERTS/server.crt" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' > "$CERTS/client.ext"
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout "$CERTS/admin.key" -out "$CERTS/admin.csr" 2>/dev/null
    openssl x509 -req -in "$CERTS/admin.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
      -days 3650 -extfile "$CERTS/client.ext" -out "$CERTS/admin.crt" 2>/dev/null
    openssl genrsa -out "$CERTS/sa.key" 2048 2>/dev/null
    openssl rsa -in "$CERTS/sa.key" -pubout -out "$CERTS/sa.pub" 2>/dev/null
  fi
  cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hapair-local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$CERTS/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$CERTS/admin.crt", client-key: "$CERTS/admin.key"}
contexts:
- name: hapair-local
  context: {cluster: hapair-local, user: admin}
current-context: hapair-local
EOF
}

# ============================================================================================= up
up() {
  local all_alive=1 p
  for p in $COMPONENTS; do alive "$p" || all_alive=0; done
  if [ $all_alive = 1 ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    log "already running"; pv_reclaim || true; print_env; return 0
  fi
  local t0; t0=$(now)
  build
  need_packages $PACKAGES_UP
  log "starting the cluster (node Ready in ~20 s)"
  down > /dev/null 2>&1 || true   # whatever a previous run left behind
  mkdir -p "$LOGS" "$CERTS" "$CONF" "$RUN/etcd-data" "$(dirname "$CNI_IPAM")"
  # a fresh cluster has no claims: empty every PV directory
  rm -rf "$PV_DIR"

  # --------------------------------------------------------------------------------- host network
  ip addr add "$NODE_IP/32" dev lo 2>/dev/null || true
  # Service CIDR is routed to lo: a ClusterIP without a DNAT rule is dropped here, never sent out via eth0
  ip route replace "$SVC_CIDR" dev lo src "$NODE_IP"
  set_sysctl net/bridge/bridge-nf-call-iptables 1
  set_sysctl net/ipv4/ip_forward 1   # the bridge plugin (isGateway) would set it anyway
  # Guard: pods may talk to each other, to the host and to services, never out of the machine
  iptables -t mangle -C FORWARD -i cni0 ! -o cni0 -j DROP 2>/dev/null || iptables -t mangle -I FORWARD -i cni0 ! -o cni0 -j DROP
  # CNI: bridge + host-local + portmap (loopback is handled by containerd's CRI itself)
  mkdir -p "$(dirname "$CNI_CONF")"
  cat > "$CNI_CONF" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NAME",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$CNI_GW"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CNI_IPAM"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # resolv.conf for pods: no cluster DNS; 127.0.0.1 makes lookups fail fast and stay inside the pod
  echo "nameserver 127.0.0.1" > "$CONF/resolv.conf"

  # ----------------------------------------------------------------------------------- containerd
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE (bit 24 of CapBnd clear), so runc cannot
  # set the sandbox's oom_score_adj=-998 ("nsexec: failed to update /proc/self/oom_score_adj:
  # Permission denied" -> "can't get final child's PID from pipe: EOF"); clamp to containerd's own.
  containerd config default | sed \
    -e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" \
    -e 's#bin_dir = "/opt/cni/bin"#bin_dir = "/usr/lib/cni"#' \
    -e 's#SystemdCgroup = true#SystemdCgroup = false#' \
    -e 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#' > "$CONF/containerd.toml"
  grep -q 'restrict_oom_score_adj = true' "$CONF/containerd.toml" || die "containerd config: restrict_oom_score_adj not set"
  start containerd containerd --config "$CONF/containerd.toml"
  for _ in $(seq 1 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr version >/dev/null 2>&1 || { tail -20 "$LOGS/containerd.log" >&2; die "containerd did not start"; }
  ctr_clean   # containers of a previous cluster (its etcd is gone)
  ensure_images
  ensure_certs

  # ---------------------------------------------------------------------------- etcd, apiserver
  start etcd "$BIN/etcd" --name hapair-local --data-dir "$RUN/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" \
    --initial-cluster "hapair-local=http://127.0.0.1:$((ETCD_PORT+1))"
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q true && break; sleep 0.1; done
  # bound on all local addresses so that pods reach it via the `kubernetes` Service (-> $NODE_IP:$API_PORT)
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
    --tls-cert-file="$CERTS/server.crt" --tls-private-key-file="$CERTS/server.key" \
    --client-ca-file="$CERTS/ca.crt" \
    --kubelet-client-certificate="$CERTS/admin.crt" --kubelet-client-key="$CERTS/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$CERTS/sa.pub" --service-account-signing-key-file="$CERTS/sa.key" \
    --service-cluster-ip-range="$SVC_CIDR" \
    --authorization-mode=Node,RBAC --allow-privileged=true
  for _ in $(seq 1 300); do
    kubectl get --raw /readyz >/dev/null 2>&1 && break
    alive kube-apiserver || { tail -30 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver died"; }
    sleep 0.1
  done
  log "apiserver ready"

  # -------------------------------------------------------------------- controller-manager, scheduler
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false \
    --service-account-private-key-file="$CERTS/sa.key" --root-ca-file="$CERTS/ca.crt" \
    --use-service-account-credentials=false \
    --controllers='*,-nodeipam,-service,-route,-cloud-node-lifecycle'
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --bind-address=127.0.0.1 --port=0 --secure-port=0

  # -------------------------------------------------------------------------------------- kubelet
  mkdir -p /var/lib/kubelet
  cat > "$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: "$CERTS/ca.crt"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
resolvConf: "$CONF/resolv.conf"
clusterDomain: cluster.local
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
EOF
  # AWS_EC2_METADATA_DISABLED (exported above): kubelet 1.20's built-in ECR credential provider otherwise
  # probes http://169.254.169.254 at start-up (seen: an ESTABLISHED connection leaving the machine).
  start kubelet "$BIN/kubelet" --config="$CONF/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CTR_SOCK" \
    --runtime-request-timeout=5m \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --pod-infra-container-image="$PAUSE_IMAGE" --root-dir=/var/lib/kubelet --v=1

  # ----------------------------------------------------------------------------------- kube-proxy
  cat > "$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG"}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml"

  # ------------------------------------------------------------------------ wait for node Ready
  local ready=""
  for _ in $(seq 1 600); do
    ready=$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    for p in kubelet kube-proxy containerd kube-controller-manager kube-scheduler; do
      alive $p || { tail -20 "$LOGS/$p.log" >&2; die "$p died; see $LOGS/$p.log"; }
    done
    sleep 0.2
  done
  [ "$ready" = True ] || die "node not Ready after 120s; see $LOGS/kubelet.log"
  log "node $NODE_NAME Ready"
  ensure_storage
  start pv-reclaimer "$SELF" pv-reclaimer
  # pods are rejected until the namespace's default ServiceAccount has its token secret (v1.20)
  for _ in $(seq 1 150); do
    [ -n "$(kubectl get sa default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ] && break; sleep 0.2
  done
  log "cluster up in $(since "$t0")s; logs in $LOGS"
  print_env
}

print_env() {
  echo "export KUBECONFIG=$KUBECONFIG"
  echo "export PATH=\"$BIN:\$PATH\"   # kubectl v1.20.2"
}

status() {
  local p pid rc=0
  for p in $COMPONENTS; do
    if alive "$p"; then
      pid=$(cat "$RUN/$p.pid"); printf '%-24s pid=%-7s rss=%s\n' "$p" "$pid" "$(awk '/VmRSS/{print $2" "$3}' "/proc/$pid/status")"
    else printf '%-24s not running\n' "$p"; rc=1; fi
  done
  echo "pod containers: $(ls /run/containerd/io.containerd.runtime.v2.task/k8s.io/ 2>/dev/null | wc -l)"
  if [ $rc = 0 ]; then
    kubectl get node "$NODE_NAME" --no-headers 2>/dev/null || true
    echo "PV pool: $(kubectl get pv -l "$PV_LABEL" --no-headers -o custom-columns=P:.status.phase 2>/dev/null | sort | uniq -c | xargs)"
  fi
  return $rc
}

case "${1:-}" in
  up) lock; up ;;
  down) lock; down ;;
  build) lock; build ;;
  status) status ;;
  env) print_env ;;
  pv-reclaim) pv_reclaim ;;
  pv-reclaimer) pv_reclaimer ;;   # internal: the long-running component started by `up`
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
