# A real node for the e2e suite, sourced after control-plane/lib.sh (issue 10):
#   containerd + runc (Debian), a CNI bridge (containernetworking-plugins), kube-controller-manager,
#   kube-scheduler and a kubelet registering node "ps-e2e-node" against the suite's kube-apiserver.
#
#   node_tools      install containerd, runc, CNI plugins, buildah, iproute2 with apt if missing
#   node_images     build the pause and probe images (OCI archives, cached); sets NODE_IMAGES
#   node_up         start everything (needs cp_up first); exports NODE_* variables
#   node_import F   import an OCI archive into containerd's k8s.io namespace
#   node_down       stop everything (also on failure; `run` adds the namespace guarantees below)
#
# Isolation: `tests/e2e/run` runs the whole cluster inside its own network, PID and mount
# namespaces (unshare), so the bridge 10.234.0.0/24 and every port exist only there, nothing has a
# route off the machine, every process (container shims included) dies with the run, and every
# mount (pod volumes, overlay snapshots) disappears with it. Only the kubelet's cgroups live in
# the host's cgroup tree: under a per-run cgroup root /ps-e2e-<id>, removed by node_down and again
# by `run` afterwards.
#
# The VM lacks CAP_SYS_RESOURCE, so containerd must not lower oom_score_adj:
# restrict_oom_score_adj = true (see tests/e2e/README.md, "The node").

NODE_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_IMAGES=()
NODE_NAME=ps-e2e-node
NODE_SUBNET=10.234.0.0/24
NODE_IP=10.234.0.1
NODE_BRIDGE=pse2e0
# Every pod that should run tolerates this taint; the structural scenarios' pods (images from
# registry.invalid) stay Pending instead of failing image pulls on the node.
NODE_TAINT_KEY=ps-injector.io/e2e-node
# Images built by node_images, by name.
NODE_PAUSE_IMAGE=ps-e2e.invalid/pause:1
NODE_PROBE_IMAGE=ps-e2e.invalid/probe:1
# The probe with USER 4321 in its image: a pod that names no user runs it as a user the webhook
# cannot know.
NODE_PROBE_4321_IMAGE=ps-e2e.invalid/probe-4321:1

_node_log() { echo "node: $*" >&2; }
_node_die() { echo "node: ERROR: $*" >&2; return 1; }

# node_tools: the Debian packages a node needs; installed with apt when missing, loudly fatal
# when that is impossible.
node_tools() {
    local missing=() cmd pkg
    for pair in containerd:containerd ctr:containerd runc:runc buildah:buildah ip:iproute2 unshare:util-linux; do
        cmd="${pair%%:*}" pkg="${pair#*:}"
        command -v "$cmd" >/dev/null || missing+=("$pkg")
    done
    for p in bridge host-local loopback; do
        [[ -x "/usr/lib/cni/$p" ]] || missing+=(containernetworking-plugins)
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        _node_log "installing with apt: ${missing[*]}"
        [[ $(id -u) -eq 0 ]] || { _node_die "installing ${missing[*]} needs root (apt-get)"; return 1; }
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
            || { _node_die "apt-get install ${missing[*]} failed: the node needs them"; return 1; }
    fi
    for cmd in containerd ctr runc buildah ip unshare; do
        command -v "$cmd" >/dev/null || { _node_die "$cmd still missing after apt-get install"; return 1; }
    done
}

# node_oci_image OUT NAME CONTEXT [buildah bud args...]: build CONTEXT/Containerfile (or -f) with
# buildah (vfs storage in a throwaway root) and write it as an OCI archive OUT named NAME.
node_oci_image() {
    local out="$1" name="$2" ctx="$3"; shift 3
    local store; store="$(mktemp -d "${TMPDIR:-/tmp}/ps-e2e-buildah.XXXXXX")"
    local b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    if "${b[@]}" bud --quiet --pull=never --layers=false -t "$name" "$@" "$ctx" >"$store/bud.log" 2>&1 \
        && "${b[@]}" push --quiet "$name" "oci-archive:$out.tmp:$name" >>"$store/bud.log" 2>&1; then
        mv "$out.tmp" "$out"
        "${b[@]}" rmi --all --force >/dev/null 2>&1 || true
        rm -rf "$store"
        return 0
    fi
    _node_log "buildah failed for $name:"; tail -n 30 "$store/bud.log" >&2
    "${b[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$store" "$out.tmp"
    return 1
}

# node_images: the pause (sandbox) image and the probe image, from tests/e2e/node/probe (Go,
# static), cached by source hash under $PS_E2E_IMAGE_CACHE.
node_images() {
    local cache="${PS_E2E_IMAGE_CACHE:-$HOME/.cache/ps-injector/e2e-images}"
    local src="$NODE_LIB_DIR/probe"
    local h; h="$(cat "$src/go.mod" "$src/main.go" "${BASH_SOURCE[0]}" <(go version) | sha256sum | cut -c1-16)"
    local d="$cache/probe-$h"
    if [[ ! -f "$d/.complete" ]]; then
        _node_log "building the probe and pause images ($d)"
        rm -rf "$d"; mkdir -p "$d/ctx"
        (cd "$src" && CGO_ENABLED=0 GOFLAGS= nice -n 19 go build -trimpath -ldflags "-s -w" -o "$d/ctx/probe" .) \
            || { _node_die "go build of the probe failed"; return 1; }
        cp "$d/ctx/probe" "$d/ctx/pause"
        # The sandbox: argv[0] "pause" sleeps and reaps. The probe: no shell, no entrypoint needed.
        printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$d/pause.Containerfile"
        printf 'FROM scratch\nCOPY probe /probe\nUSER 65532:65532\nENTRYPOINT ["/probe"]\n' >"$d/probe.Containerfile"
        node_oci_image "$d/pause.oci.tar" "$NODE_PAUSE_IMAGE" "$d/ctx" -f "$d/pause.Containerfile" || return 1
        printf 'FROM scratch\nCOPY probe /probe\nUSER 4321:4321\nENTRYPOINT ["/probe"]\n' >"$d/probe-4321.Containerfile"
        node_oci_image "$d/probe.oci.tar" "$NODE_PROBE_IMAGE" "$d/ctx" -f "$d/probe.Containerfile" || return 1
        node_oci_image "$d/probe-4321.oci.tar" "$NODE_PROBE_4321_IMAGE" "$d/ctx" -f "$d/probe-4321.Containerfile" || return 1
        touch "$d/.complete"
    fi
    NODE_IMAGES=("$d/pause.oci.tar" "$d/probe.oci.tar" "$d/probe-4321.oci.tar")
}

_node_ctr() { ctr --address "$NODE_DIR/containerd.sock" -n k8s.io "$@"; }

# node_import ARCHIVE...: import OCI archives into containerd's k8s.io namespace (what the kubelet
# sees), under the name the archive's index gives (org.opencontainers.image.ref.name).
node_import() {
    local f
    for f in "$@"; do
        _node_ctr images import --no-unpack=false --snapshotter overlayfs "$f" >"$NODE_DIR/import.log" 2>&1 \
            || { cat "$NODE_DIR/import.log" >&2; _node_die "ctr images import $f failed"; return 1; }
    done
}

_node_containerd() {
    local d="$NODE_DIR/containerd"
    mkdir -p "$d/root" "$d/state" "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$NODE_DIR/containerd.sock"
[ttrpc]
  address = "$NODE_DIR/containerd-ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_PAUSE_IMAGE"
  # This VM has no CAP_SYS_RESOURCE: never lower a score below containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
EOF
    # The pod network: one bridge, host-local addresses, no masquerade and no default route, so
    # pods reach only the bridge's own subnet (the host side is $NODE_IP).
    cat >"$NODE_DIR/cni/net.d/10-ps-e2e.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "ps-e2e", "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "isDefaultGateway": false,
   "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
            "ranges": [[{"subnet": "$NODE_SUBNET", "gateway": "$NODE_IP"}]]}}
]}
EOF
    setpriv --pdeathsig KILL -- containerd --config "$d/config.toml" --log-level warn >>"$NODE_DIR/containerd.log" 2>&1 &
    NODE_CONTAINERD_PID=$!
    local i
    for i in $(seq 300); do
        _node_ctr version >/dev/null 2>&1 && return 0
        kill -0 "$NODE_CONTAINERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 30 "$NODE_DIR/containerd.log" >&2
    _node_die "containerd did not answer on $NODE_DIR/containerd.sock"
}

# The bridge exists before anything starts: the kubelet's node IP and the emulator's address
# live on it, and the CNI bridge plugin adopts an existing bridge.
_node_bridge() {
    ip link set lo up
    ip link add "$NODE_BRIDGE" type bridge 2>/dev/null || ip link show "$NODE_BRIDGE" >/dev/null \
        || { _node_die "cannot create bridge $NODE_BRIDGE"; return 1; }
    ip addr replace "$NODE_IP/${NODE_SUBNET#*/}" dev "$NODE_BRIDGE" && ip link set "$NODE_BRIDGE" up \
        || { _node_die "cannot configure bridge $NODE_BRIDGE"; return 1; }
}

# Per-run cgroup root in every v1 hierarchy (the kubelet refuses a cgroupRoot that does not
# exist); cpuset needs its cpus and mems copied from the parent before tasks can join.
_node_cgroups() {
    NODE_CGROUP_ROOT="/ps-e2e-$(basename "$CP_DIR" | sed "s/^ps-e2e-cp[.]//" | tr -cd "A-Za-z0-9")"
    local h
    for h in /sys/fs/cgroup/*/; do
        [[ -d "$h" && "$h" != */unified/ ]] || continue
        mountpoint -q "$h" || continue
        mkdir -p "$h${NODE_CGROUP_ROOT#/}" || { _node_die "cannot create cgroup $h${NODE_CGROUP_ROOT#/}"; return 1; }
        if [[ -f "$h/cpuset.cpus" ]]; then
            cat "$h/cpuset.cpus" >"$h${NODE_CGROUP_ROOT#/}/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h${NODE_CGROUP_ROOT#/}/cpuset.mems"
        fi
    done
    [[ -d /sys/fs/cgroup/unified ]] && mkdir -p "/sys/fs/cgroup/unified${NODE_CGROUP_ROOT}"
    return 0
}

# node_cgroups_remove ROOT: remove a kubelet cgroup tree (deepest first; processes must be gone).
node_cgroups_remove() {
    local root="$1" h i
    [[ "$root" == /ps-e2e-* ]] || return 0
    for i in $(seq 50); do
        local left=0
        for h in /sys/fs/cgroup/*/; do
            [[ -d "$h${root#/}" ]] || continue
            find "$h${root#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d "$h${root#/}" ]] && left=1
        done
        [[ $left -eq 0 ]] && return 0
        sleep 0.2
    done
    _node_log "cgroup $root could not be removed completely"
}

_node_components() {
    local pki="$CP_DIR/pki"
    setpriv --pdeathsig KILL -- "$KUBE_CONTROLLER_MANAGER" --kubeconfig="$KUBECONFIG" \
        --leader-elect=false --secure-port=0 --use-service-account-credentials=false \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --cluster-name=ps-e2e --v=1 >>"$NODE_DIR/kube-controller-manager.log" 2>&1 &
    NODE_KCM_PID=$!
    setpriv --pdeathsig KILL -- "$KUBE_SCHEDULER" --kubeconfig="$KUBECONFIG" \
        --leader-elect=false --secure-port=0 --v=1 >>"$NODE_DIR/kube-scheduler.log" 2>&1 &
    NODE_SCHEDULER_PID=$!

    local kport; kport=$(_cp_free_port) || return 1
    mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"
    # No nameserver: pods resolve names through /etc/hosts (hostAliases) or not at all.
    printf 'options ndots:1\n' >"$NODE_DIR/resolv.conf"
    cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM mounts cgroup v1 (hybrid) and has no swap.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
containerRuntimeEndpoint: unix://$NODE_DIR/containerd.sock
address: $NODE_IP
port: $kport
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: AlwaysAllow
registerWithTaints:
  - {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_DIR/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%}
protectKernelDefaults: false
EOF
    setpriv --pdeathsig KILL -- "$KUBELET" --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
        --root-dir="$NODE_DIR/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
        --v=1 >>"$NODE_DIR/kubelet.log" 2>&1 &
    NODE_KUBELET_PID=$!
}

# node_up: bridge, containerd (with the pause and probe images), controller-manager, scheduler,
# kubelet; returns when node $NODE_NAME is Ready.
node_up() {
    local t0; t0=$(date +%s%N)
    [[ -n "${CP_DIR:-}" && -n "${KUBECONFIG:-}" ]] || { _node_die "node_up needs cp_up first"; return 1; }
    # Never on the host's own network: tests/e2e/run enters private namespaces first.
    [[ "${PS_E2E_NAMESPACED:-}" == 1 ]] || { _node_die "node_up runs only inside the run's private namespaces (tests/e2e/run)"; return 1; }
    for b in "$KUBELET" "$KUBE_CONTROLLER_MANAGER" "$KUBE_SCHEDULER"; do
        [[ -x "$b" ]] || { _node_die "$b missing (control-plane/build)"; return 1; }
    done
    NODE_DIR="$CP_DIR/node"
    mkdir -p "$NODE_DIR"
    export NODE_DIR
    NODE_CONTAINERD_PID="" NODE_KCM_PID="" NODE_SCHEDULER_PID="" NODE_KUBELET_PID="" NODE_CGROUP_ROOT=""
    [[ ${#NODE_IMAGES[@]} -gt 0 ]] || node_images || return 1
    # Paths the kubelet and CNI use regardless of configuration: private to this mount namespace.
    local m
    for m in /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni /run/netns /etc/cni/net.d; do
        mkdir -p "$m" && mount -t tmpfs -o mode=0755,size=64m ps-e2e "$m" \
            || { _node_die "cannot mount a private tmpfs on $m"; return 1; }
    done
    _node_bridge || return 1
    _node_cgroups || return 1
    _node_containerd || return 1
    node_import "${NODE_IMAGES[@]}" || return 1
    _node_components || return 1
    local i
    for i in $(seq 600); do
        [[ "$("$KUBECTL" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] && break
        for p in "$NODE_KUBELET_PID" "$NODE_KCM_PID" "$NODE_SCHEDULER_PID" "$NODE_CONTAINERD_PID"; do
            kill -0 "$p" 2>/dev/null && continue
            for f in kubelet kube-controller-manager kube-scheduler containerd; do
                _node_log "last lines of $f.log:"; tail -n 15 "$NODE_DIR/$f.log" >&2
            done
            _node_die "a node component exited during start-up"; return 1
        done
        sleep 0.2
    done
    [[ "$("$KUBECTL" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] || {
        tail -n 30 "$NODE_DIR/kubelet.log" >&2; _node_die "node $NODE_NAME not Ready within 120 s"; return 1; }
    export NODE_NAME NODE_IP NODE_TAINT_KEY NODE_PROBE_IMAGE NODE_PROBE_4321_IMAGE NODE_CGROUP_ROOT
    _node_log "node $NODE_NAME Ready at $NODE_IP in $(( ($(date +%s%N) - t0) / 1000000 )) ms (kubelet $K8S_VERSION, $(containerd --version | awk '{print $3}'), cgroup root $NODE_CGROUP_ROOT)"
}

# node_smoke: a pod from the locally imported probe image runs on the node, and what it
# observed comes back through the API as its termination message.
node_smoke() {
    local ns=e2e-node-smoke
    "$KUBECTL" create namespace "$ns" >/dev/null || return 1
    "$KUBECTL" create serviceaccount default -n "$ns" >/dev/null 2>&1 || true
    "$KUBECTL" apply -n "$ns" -f - >/dev/null <<EOF || return 1
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smoke"},
 "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
  "tolerations": [{"key": "$NODE_TAINT_KEY", "operator": "Exists"}],
  "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "probe", "image": "$NODE_PROBE_IMAGE", "imagePullPolicy": "Never",
   "command": ["/probe", "report", "/etc/hostname"],
   "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}}]}}
EOF
    local i phase=""
    for i in $(seq 600); do
        phase="$("$KUBECTL" get pod smoke -n "$ns" -o jsonpath='{.status.phase}')"
        [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
        sleep 0.2
    done
    local msg; msg="$("$KUBECTL" get pod smoke -n "$ns" -o jsonpath='{.status.containerStatuses[0].state.terminated.message}')"
    if [[ "$phase" != Succeeded ]] || ! jq -e '.uid == 1000 and .files["/etc/hostname"].len > 0' <<<"$msg" >/dev/null; then
        "$KUBECTL" get pod smoke -n "$ns" -o json | jq -c '.status' >&2
        tail -n 30 "$NODE_DIR/kubelet.log" >&2
        _node_die "smoke pod: phase '$phase', termination message '$msg'"; return 1
    fi
    "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null
    _node_log "smoke: a pod from $NODE_PROBE_IMAGE ran as uid 1000 and reported through its termination message"
}

# Mount points under DIR (pod volumes, snapshots, network namespaces), deepest first.
_node_mounts_under() {
    awk -v d="$1/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r
}

node_down() {
    _cp_stop_pid "${NODE_KUBELET_PID:-}"; NODE_KUBELET_PID=""
    _cp_stop_pid "${NODE_SCHEDULER_PID:-}"; NODE_SCHEDULER_PID=""
    _cp_stop_pid "${NODE_KCM_PID:-}"; NODE_KCM_PID=""
    if [[ -n "${NODE_CONTAINERD_PID:-}" ]] && kill -0 "$NODE_CONTAINERD_PID" 2>/dev/null; then
        # Kill every container task first: shims outlive containerd.
        local t
        for t in $(_node_ctr tasks ls -q 2>/dev/null); do
            _node_ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        done
    fi
    _cp_stop_pid "${NODE_CONTAINERD_PID:-}"; NODE_CONTAINERD_PID=""
    [[ -n "${NODE_CGROUP_ROOT:-}" ]] && node_cgroups_remove "$NODE_CGROUP_ROOT"
    ip link del "$NODE_BRIDGE" 2>/dev/null || true
    # The mounts vanish with the run's mount namespace anyway; unmounting now lets cp_down
    # remove the directory.
    if [[ -n "${NODE_DIR:-}" ]]; then
        local m
        for m in $(_node_mounts_under "$NODE_DIR"); do umount -l "$m" 2>/dev/null || true; done
    fi
    return 0
}
