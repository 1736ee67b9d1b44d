# shellcheck shell=bash
# Library: run etcd + kube-apiserver on loopback for the e2e suite. Source it, then
#
#   cp_up            builds (or finds, when warm) the binaries, starts etcd and kube-apiserver on
#                    free loopback ports in a temp dir, waits for /readyz, writes a kubeconfig
#   cp_down          stops both (TERM, then KILL after 10 s) and removes the temp dir
#
# A script that sources this must call cp_down on every exit path (trap cp_down EXIT); `start`
# does that. As a second line of defence both processes run with a parent-death signal, so they
# are killed (SIGKILL: the state is throwaway) when the shell that started them dies, even by
# SIGKILL; only the temp dir is left behind then.
#
# After cp_up these are set (and exported):
#   KUBECONFIG        admin kubeconfig (client certificate in group system:masters, data inlined)
#   CP_SERVER         https://127.0.0.1:PORT
#   CP_DIR            the temp dir (logs: etcd.log, kube-apiserver.log; pki/)
#   CP_CA_CRT         CA that signed the apiserver's serving and client certificates
#   CP_USER_TOKEN     bearer token of "e2e-user" (no groups besides system:authenticated; for RBAC denials)
#   KUBE_APISERVER KUBECTL ETCD HELM K8S_VERSION ETCD_VERSION HELM_VERSION   from build --print
#
# Flags follow test-harness.md §5: --advertise-address=127.0.0.1, RBAC, the ServiceAccount and
# PodSecurity admission plugins ON (create the `default` ServiceAccount in each test namespace
# unless ../node/lib.sh runs a controller-manager), service-account keys,
# --endpoint-reconciler-type=none; for the node: --enable-aggregator-routing=true (webhook
# Services resolve to endpoint IPs without kube-proxy) and a kubelet client certificate.

CP_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

_cp_log() { echo "control-plane: $*" >&2; }
_cp_die() { echo "control-plane: ERROR: $*" >&2; return 1; }

# A free loopback TCP port: random in 20000-59999, not accepting connections. The process that
# binds it is checked afterwards, and cp_up retries with new ports if a bind fails.
_cp_free_port() {
    local p i
    for i in $(seq 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    _cp_die "no free port found"
}

_cp_pki() {
    local d="$1"
    mkdir -p "$d" && chmod 700 "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=ps-injector-e2e-ca" -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        # apiserver serving certificate: loopback and the in-cluster names.
        cat >serving.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:10.234.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
            -keyout serving.key -out serving.csr 2>/dev/null
        openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile serving.ext -out serving.crt 2>/dev/null
        # admin client certificate: group system:masters.
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >client.ext
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=system:masters/CN=e2e-admin" \
            -keyout admin.key -out admin.csr 2>/dev/null
        openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile client.ext -out admin.crt 2>/dev/null
        # service-account token signing keys.
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
        openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
        # static token file: an unprivileged user for RBAC checks.
        echo "$(openssl rand -hex 24),e2e-user,e2e-user-uid" >tokens.csv
        chmod 600 ./*.key tokens.csv
    ) || _cp_die "certificate generation with openssl failed"
    for f in ca.crt serving.crt admin.crt sa.key sa.pub tokens.csv; do
        [[ -s "$d/$f" ]] || _cp_die "missing $d/$f after certificate generation" || return 1
    done
}

_cp_kubeconfig() {
    local d="$1" server="$2" out="$3"
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: e2e-admin
  user:
    client-certificate-data: $(base64 -w0 "$d/admin.crt")
    client-key-data: $(base64 -w0 "$d/admin.key")
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e-admin
current-context: e2e
EOF
    chmod 600 "$out"
}

# _cp_wait URL what pid logfile [curl args...]: poll until the URL answers "ok"-ish, or fail.
_cp_wait() {
    local url="$1" what="$2" pid="$3" logf="$4"; shift 4
    local i body
    for i in $(seq 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            _cp_log "$what exited; last lines of $logf:"; tail -n 30 "$logf" >&2
            return 1
        fi
        body="$(curl -fsS --max-time 2 "$@" "$url" 2>/dev/null || true)"
        case "$body" in
            ok|*'"health":"true"'*) return 0 ;;
        esac
        sleep 0.1
    done
    _cp_log "$what not healthy at $url after 60 s; last lines of $logf:"; tail -n 30 "$logf" >&2
    return 1
}

_cp_stop_pid() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

_cp_start_etcd() {
    local client peer
    client=$(_cp_free_port) && peer=$(_cp_free_port) || return 1
    CP_ETCD_URL="http://127.0.0.1:$client"
    setpriv --pdeathsig KILL -- "$ETCD" --name=e2e --data-dir="$CP_DIR/etcd" \
        --listen-client-urls="$CP_ETCD_URL" --advertise-client-urls="$CP_ETCD_URL" \
        --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
        --initial-cluster="e2e=http://127.0.0.1:$peer" --unsafe-no-fsync --log-level=warn \
        >>"$CP_DIR/etcd.log" 2>&1 &
    CP_ETCD_PID=$!
    _cp_wait "$CP_ETCD_URL/health" etcd "$CP_ETCD_PID" "$CP_DIR/etcd.log"
}

_cp_start_apiserver() {
    local port
    port=$(_cp_free_port) || return 1
    CP_SERVER="https://127.0.0.1:$port"
    local pki="$CP_DIR/pki"
    setpriv --pdeathsig KILL -- "$KUBE_APISERVER" \
        --etcd-servers="$CP_ETCD_URL" \
        --bind-address="${CP_BIND_ADDRESS:-127.0.0.1}" --secure-port="$port" --advertise-address=127.0.0.1 \
        --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
        --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
        --authorization-mode=RBAC \
        --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
        --service-account-issuer="$CP_SERVER" \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
        --endpoint-reconciler-type=none --profiling=false \
        --enable-aggregator-routing=true \
        --kubelet-client-certificate="$pki/admin.crt" --kubelet-client-key="$pki/admin.key" \
        --kubelet-preferred-address-types=InternalIP \
        >>"$CP_DIR/kube-apiserver.log" 2>&1 &
    CP_APISERVER_PID=$!
    _cp_wait "$CP_SERVER/readyz" kube-apiserver "$CP_APISERVER_PID" "$CP_DIR/kube-apiserver.log" --cacert "$pki/ca.crt"
}

cp_up() {
    local t0; t0=$(date +%s%N)
    command -v openssl >/dev/null || { _cp_die "openssl not found"; return 1; }
    command -v curl >/dev/null || { _cp_die "curl not found"; return 1; }
    command -v setpriv >/dev/null || { _cp_die "setpriv (util-linux) not found"; return 1; }
    local paths
    "$CP_LIB_DIR/build" >&2 || { _cp_die "control-plane build failed"; return 1; }
    paths="$("$CP_LIB_DIR/build" --print)" || return 1
    eval "$paths"
    export KUBE_APISERVER KUBECTL ETCD HELM K8S_VERSION ETCD_VERSION HELM_VERSION
    export KUBELET KUBE_CONTROLLER_MANAGER KUBE_SCHEDULER

    CP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ps-e2e-cp.XXXXXX")"
    export CP_DIR
    CP_ETCD_PID="" CP_APISERVER_PID=""

    local attempt ok=""
    for attempt in 1 2 3; do
        if _cp_start_etcd; then ok=1; break; fi
        _cp_stop_pid "$CP_ETCD_PID"; CP_ETCD_PID=""; rm -rf "$CP_DIR/etcd"
        _cp_log "etcd did not start (attempt $attempt), retrying with new ports"
    done
    [[ -n "$ok" ]] || { _cp_die "etcd failed to start; see $CP_DIR/etcd.log"; return 1; }

    ok=""
    for attempt in 1 2 3; do
        # the serving certificate does not name the port, so one PKI serves every attempt
        [[ -s "$CP_DIR/pki/ca.crt" ]] || _cp_pki "$CP_DIR/pki" || return 1
        if _cp_start_apiserver; then ok=1; break; fi
        _cp_stop_pid "$CP_APISERVER_PID"; CP_APISERVER_PID=""
        _cp_log "kube-apiserver did not become ready (attempt $attempt), retrying with a new port"
    done
    [[ -n "$ok" ]] || { _cp_die "kube-apiserver failed to start; see $CP_DIR/kube-apiserver.log"; return 1; }

    KUBECONFIG="$CP_DIR/kubeconfig"
    _cp_kubeconfig "$CP_DIR/pki" "$CP_SERVER" "$KUBECONFIG"
    CP_CA_CRT="$CP_DIR/pki/ca.crt"
    CP_USER_TOKEN="$(cut -d, -f1 "$CP_DIR/pki/tokens.csv")"
    export KUBECONFIG CP_SERVER CP_CA_CRT CP_USER_TOKEN CP_ETCD_URL

    # Ready means the admin can act: RBAC bootstrap roles are in place.
    local i
    for i in $(seq 100); do
        "$KUBECTL" auth can-i '*' '*' >/dev/null 2>&1 && break
        sleep 0.2
    done
    "$KUBECTL" auth can-i '*' '*' >/dev/null 2>&1 || { _cp_die "admin cannot act on $CP_SERVER (RBAC bootstrap?)"; return 1; }
    _cp_log "kube-apiserver $K8S_VERSION ready at $CP_SERVER (etcd $ETCD_VERSION at $CP_ETCD_URL) in $(( ($(date +%s%N) - t0) / 1000000 )) ms; KUBECONFIG=$KUBECONFIG"
}

cp_down() {
    _cp_stop_pid "${CP_APISERVER_PID:-}"; CP_APISERVER_PID=""
    _cp_stop_pid "${CP_ETCD_PID:-}"; CP_ETCD_PID=""
    if [[ -n "${CP_DIR:-}" && -d "$CP_DIR" ]]; then
        if [[ -n "${CP_KEEP:-}" ]]; then
            _cp_log "kept $CP_DIR (CP_KEEP set)"
        else
            rm -rf "$CP_DIR"
        fi
    fi
    CP_DIR=""
}
