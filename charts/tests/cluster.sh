#!/usr/bin/env bash
# The chart against a real kube-apiserver: install, scoping, Pod Security, certificate reuse and
# rotation across upgrades, failure policy, the end-to-end suite's URL shape, uninstall; and
# self-managed certificates (cluster_self_managed.sh): GitOps apply, replica race, RBAC, rotation
# under load.
#
# Runs inside tests/e2e/control-plane/start (which exports KUBECONFIG, KUBECTL, HELM); the
# ps-webhook binary comes from PS_WEBHOOK_BIN. There is no kubelet: the chart's Deployment never
# runs, so the webhook runs here on loopback with the certificate the chart generated, and the
# chart registers it by URL (webhook.url) with that certificate's caBundle. Everything else is
# the chart as a cluster admin installs it.
#
#   charts/test runs this; by hand:
#   tests/e2e/control-plane/start env PS_WEBHOOK_BIN=... charts/tests/cluster.sh
#
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chart="$(cd "$here/../ps-injector" && pwd)"
: "${KUBECTL:?run inside tests/e2e/control-plane/start}" "${HELM:?}" "${PS_WEBHOOK_BIN:?}"

passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1: $2"; }
check() { local n="$1"; shift; if "$@"; then ok "$n"; else fail "$n" "condition false"; fi; }
expect() { local n="$1"; shift; local out; if out="$("$@" 2>&1)"; then ok "$n"; else fail "$n" "$(tail -n 3 <<<"$out")"; fi; }
k() { "$KUBECTL" "$@"; }

work="$(mktemp -d)"
webhook_pid=""
stop_webhook() {
    [[ -n "$webhook_pid" ]] || return 0
    kill -TERM "$webhook_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$webhook_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$webhook_pid" 2>/dev/null || true
    wait "$webhook_pid" 2>/dev/null || true
    webhook_pid=""
}
trap 'stop_webhook; rm -rf "$work"' EXIT

free_port() {
    local p
    for _ in $(seq 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

rel=psi
ns=ps-system
port="$(free_port)"; admin="$(free_port)"
url="https://127.0.0.1:$port/mutate"
ps_url=https://passwordsafe.example.com/BeyondTrust/api/public/v3
base_args=(--set certificates.mode=helmGenerated --set "webhook.url=$url" --set "certificates.extraIpAddresses={127.0.0.1}"
           --set "config.passwordSafe.url=$ps_url")

# ---- install --------------------------------------------------------------------------------
k create namespace "$ns" >/dev/null
k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
expect "helm install (kubeVersion constraint met by the real server)" \
    "$HELM" install "$rel" "$chart" -n "$ns" "${base_args[@]}"
mwc="$rel-ps-injector"
secret="$rel-ps-injector-tls"

mwc_json() { k get mutatingwebhookconfiguration "$mwc" -o json; }
check "the API server stored the webhook with its matchConditions (CEL compiled)" \
    test "$(mwc_json | jq -r '.webhooks[0].matchConditions[0].name')" = "ps-injector-opted-in"
check "stored failurePolicy Fail, reinvocationPolicy IfNeeded, CREATE pods" \
    test "$(mwc_json | jq -c '[.webhooks[0].failurePolicy, .webhooks[0].reinvocationPolicy, .webhooks[0].rules[0].operations, .webhooks[0].rules[0].resources]')" \
    = '["Fail","IfNeeded",["CREATE"],["pods"]]'

check "stored the warning-only workload entry: failurePolicy Ignore, its own URL, CEL compiled" \
    test "$(mwc_json | jq -c '[.webhooks[1].name, .webhooks[1].failurePolicy, .webhooks[1].clientConfig.url, .webhooks[1].matchConditions[0].name]')" \
    = "[\"warn-workloads.ps-injector.io\",\"Ignore\",\"https://127.0.0.1:$port/warn-workloads\",\"ps-injector-annotations-on-workload\"]"

secret_field() { k get secret "$secret" -n "$ns" -o json | jq -r ".data[\"$1\"]"; }
mwc_bundle() { mwc_json | jq -r '.webhooks[0].clientConfig.caBundle'; }
check "caBundle of the webhook configuration is the Secret's ca.crt" test "$(mwc_bundle)" = "$(secret_field ca.crt)"

# ---- the webhook, on loopback, with the chart's certificate and configuration ----------------
mkdir -p "$work/tls" "$work/config"
save_cert() { # save_cert DIR: write tls.crt/tls.key from the Secret, atomically
    secret_field tls.crt | base64 -d >"$1/tls.crt.new" && secret_field tls.key | base64 -d >"$1/tls.key.new" \
        && mv "$1/tls.key.new" "$1/tls.key" && mv "$1/tls.crt.new" "$1/tls.crt"
}
save_cert "$work/tls"
k get configmap "$rel-ps-injector-config" -n "$ns" -o jsonpath='{.data.config\.yaml}' >"$work/config/config.yaml"
start_webhook() {
    "$PS_WEBHOOK_BIN" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --tls-cert "$work/tls/tls.crt" --tls-key "$work/tls/tls.key" --config "$work/config/config.yaml" \
        --reload-interval 200ms --drain-delay 0s >>"$work/webhook.log" 2>&1 &
    webhook_pid=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$webhook_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "webhook did not become ready:" >&2; tail -n 20 "$work/webhook.log" >&2
    return 1
}
if start_webhook; then ok "ps-webhook serves the chart's certificate and accepts the chart's config"; else fail "ps-webhook start" "see above"; fi
admissions() { curl -sS "http://127.0.0.1:$admin/metrics" | awk '/^ps_webhook_admissions_total/ {s += $NF} END {print s + 0}'; }
cert_reloads() { curl -sS "http://127.0.0.1:$admin/metrics" | awk '/^ps_webhook_certificate_reloads_total\{result="success"\}/ {print $NF}'; }

# ---- workloads ------------------------------------------------------------------------------
apps=apps
k create namespace "$apps" >/dev/null
k label namespace "$apps" pod-security.kubernetes.io/enforce=restricted >/dev/null
k create serviceaccount default -n "$apps" >/dev/null
k create serviceaccount default -n "$ns" >/dev/null

pod() { # pod NAME [INJECT-VALUE]: a restricted-compliant pod, opted in when a value is given
    local ann='{}'
    [[ $# -ge 2 ]] && ann="{\"ps-injector.io/inject\":\"$2\",\"ps-injector.io/mode\":\"init\",\"ps-injector.io/secret-db\":\"team-a/db/password\"}"
    cat <<EOF
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"$1","annotations":$ann},
 "spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":10001,"seccompProfile":{"type":"RuntimeDefault"}},
  "containers":[{"name":"app","image":"registry.example.com/app:1","command":["/app"],
   "securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"readOnlyRootFilesystem":true}}]}}
EOF
}
# create NS NAME [VALUE] [--dry-run=server]: prints the stored pod's status annotation (or
# "none"), fails with the API error otherwise
create() {
    local n="$1" name="$2"; shift 2
    local val=() dry=()
    [[ $# -ge 1 && "$1" != --* ]] && { val=("$1"); shift; }
    [[ $# -ge 1 ]] && dry=("$1")
    pod "$name" "${val[@]}" >"$work/$name.json"
    k create -n "$n" -f "$work/$name.json" "${dry[@]}" -o json \
        | jq -r '.metadata.annotations["ps-injector.io/status"] // "none"'
}
injected() { [[ "$(create "$@" 2>"$work/err")" == injected ]]; }
untouched() { [[ "$(create "$@" 2>"$work/err")" == none ]]; }

# The configuration takes effect through an informer: poll with dry-run creates until it does.
in_effect=""
for _ in $(seq 100); do
    if injected "$apps" probe true --dry-run=server; then in_effect=1; break; fi
    sleep 0.2
done
check "the webhook configuration takes effect (dry-run pod injected)" test -n "$in_effect"

n0="$(admissions)"
check "opted-in pod in a restricted namespace: injected, and Pod Security accepts it" injected "$apps" a1 true
agent_image="$(k get pod a1 -n "$apps" -o json | jq -r '[.spec.initContainers[]?.image] | first')"
check "the injected agent image is the chart's agentImage ($agent_image)" test "$agent_image" = "ps-injector/ps-agent:0.1.0"
check "value True (any case) is sent and injected" injected "$apps" a2 True
n1="$(admissions)"
# Each opted-in pod is seen once, plus at most one reinvocation (IfNeeded: the ServiceAccount
# plugin runs again after the injection and touches the new container, so the API server asks
# again; the status annotation makes that call a no-op).
check "the webhook saw those two pods, with at most one reinvocation each ($n0 -> $n1)" \
    test "$((n1 - n0))" -ge 2 -a "$((n1 - n0))" -le 4
check "pod without the annotation: created untouched" untouched "$apps" b1
check "pod with inject \"false\": created untouched" untouched "$apps" b2 false
check "pod with inject \"0\": created untouched" untouched "$apps" b3 0
check "opted-in pod in the release namespace: created untouched" untouched "$ns" b4 true
k create namespace kube-public >/dev/null 2>&1 || true
k create serviceaccount default -n kube-public >/dev/null 2>&1 || true
check "opted-in pod in kube-public: created untouched" untouched kube-public b5 true
n2="$(admissions)"
check "matchConditions and namespaceSelector kept all of those from the webhook (admissions unchanged)" \
    test "$n2" -eq "$n1"
if create "$apps" c1 maybe >/dev/null 2>"$work/err"; then
    fail "inject \"maybe\" is sent and denied with the annotation's name" "created"
else
    check "inject \"maybe\" is sent and denied with the annotation's name" grep -q 'ps-injector.io/inject' "$work/err"
fi

# Every example workload in deploy/examples: its pod (as its controller would create it, owner
# reference included) is injected, and the API server validates the mutated pod and judges it
# restricted-compliant.
examples="$here/../../deploy/examples"
for f in "$examples"/*.yaml; do
    ex="$(basename "$f" .yaml)"
    k create -f "$f" --dry-run=client -o json >"$work/ex.json" || { fail "deploy/examples/$ex.yaml parses" ""; continue; }
    kind="$(jq -r .kind "$work/ex.json")"
    [[ "$kind" == Deployment || "$kind" == Job ]] || continue
    jq --arg kind "$kind" --arg name "ex-$ex" '{apiVersion: "v1", kind: "Pod",
            metadata: (.spec.template.metadata + {name: $name, ownerReferences: [{apiVersion: (if $kind == "Job" then "batch/v1" else "apps/v1" end),
              kind: (if $kind == "Job" then "Job" else "ReplicaSet" end), name: .metadata.name,
              uid: "00000000-0000-0000-0000-000000000001", controller: true}]}),
            spec: .spec.template.spec}' "$work/ex.json" >"$work/ex-$ex.json"
    if out="$(k create -n "$apps" -f "$work/ex-$ex.json" -o json 2>&1)"; then
        st="$(jq -r '.metadata.annotations["ps-injector.io/status"] // "none"' <<<"$out")"
        check "deploy/examples/$ex.yaml: injected, valid and restricted-compliant in the API server" test "$st" = injected
    else
        fail "deploy/examples/$ex.yaml: injected, valid and restricted-compliant in the API server" "$(tail -n 3 <<<"$out")"
    fi
done

# Annotations on a workload instead of its pod template: allowed unchanged, with the warning
# kubectl prints; a workload without them is not sent to the webhook at all. (Restricted-compliant
# templates: Pod Security would print warnings of its own.)
workload() { # workload NAME ANNOTATIONS-JSON
    cat <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$1","annotations":$2},
 "spec":{"replicas":0,"selector":{"matchLabels":{"app":"$1"}},"template":{"metadata":{"labels":{"app":"$1"}},
  "spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":10001,"seccompProfile":{"type":"RuntimeDefault"}},
   "containers":[{"name":"app","image":"registry.example.com/app:1","command":["/app"],
    "securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"readOnlyRootFilesystem":true}}]}}}}
EOF
}
workload w1 '{"ps-injector.io/inject":"true","note":"x"}' >"$work/w1.json"
if k apply -n "$apps" -f "$work/w1.json" >/dev/null 2>"$work/w1.err"; then
    check "Deployment annotated on its own metadata: kubectl apply prints the warning naming spec.template.metadata.annotations" \
        grep -q "Warning: ps-injector.io/inject on the Deployment's own metadata is ignored: .*move it to spec.template.metadata.annotations" "$work/w1.err"
    check "... and the Deployment is stored unchanged" \
        test "$(k get deployment w1 -n "$apps" -o json | jq -c '[.metadata.annotations["ps-injector.io/inject"], .spec.template.metadata.annotations]')" = '["true",null]'
else
    fail "Deployment annotated on its own metadata is created" "$(cat "$work/w1.err")"
fi
n3="$(admissions)"
workload w2 '{"note":"x"}' >"$work/w2.json"
k apply -n "$apps" -f "$work/w2.json" >/dev/null 2>"$work/w2.err"
check "Deployment without such annotations: no warning, not sent to the webhook" \
    test ! -s "$work/w2.err" -a "$(admissions)" -eq "$n3"

# The webhook's own pod template passes restricted Pod Security in the API server itself.
k get deployment "$rel-ps-injector" -n "$ns" -o json \
    | jq '{apiVersion: "v1", kind: "Pod", metadata: {name: "webhook-template", labels: .spec.template.metadata.labels}, spec: .spec.template.spec}' \
    >"$work/webhook-pod.json"
expect "the webhook Deployment's pod passes Pod Security restricted (server dry-run)" \
    k create -n "$ns" -f "$work/webhook-pod.json" --dry-run=server

# ---- upgrades: certificates reused through lookup, renewed on SAN change, rotated on request ---
crt0="$(secret_field tls.crt)"; ca0="$(secret_field ca.crt)"
expect "helm upgrade with the same values" "$HELM" upgrade "$rel" "$chart" -n "$ns" "${base_args[@]}"
check "upgrade keeps the certificate (lookup)" test "$(secret_field tls.crt)" = "$crt0"
check "upgrade keeps the CA and the caBundle" test "$(secret_field ca.crt)" = "$ca0" -a "$(mwc_bundle)" = "$ca0"

expect "helm upgrade adding a DNS name" "$HELM" upgrade "$rel" "$chart" -n "$ns" "${base_args[@]}" \
    --set 'certificates.extraDnsNames={webhook.example.com}'
crt1="$(secret_field tls.crt)"
check "a SAN change issues a new certificate" test "$crt1" != "$crt0"
check "... signed by the same CA: caBundle unchanged" test "$(secret_field ca.crt)" = "$ca0" -a "$(mwc_bundle)" = "$ca0"
check "the old certificate still serves (same CA)" injected "$apps" d1 true
r0="$(cert_reloads)"
save_cert "$work/tls"
for _ in $(seq 50); do [[ "$(cert_reloads)" != "$r0" ]] && break; sleep 0.1; done
check "the webhook hot-reloads the new certificate" test "$(cert_reloads)" != "$r0"
check "the new certificate serves" injected "$apps" d2 true

expect "helm upgrade with forceRotate" "$HELM" upgrade "$rel" "$chart" -n "$ns" "${base_args[@]}" \
    --set 'certificates.extraDnsNames={webhook.example.com}' --set certificates.helmGenerated.forceRotate=true
ca2="$(secret_field ca.crt)"
bundle_certs() { base64 -d <<<"$1" | grep -c 'BEGIN CERTIFICATE'; }
check "forceRotate makes a new CA" test "$ca2" != "$ca0"
check "the caBundle holds the new CA and the previous one" test "$(bundle_certs "$ca2")" -eq 2 -a "$(mwc_bundle)" = "$ca2"
prev_ca="$(base64 -d <<<"$ca0")"
check "the previous CA is the second certificate of the bundle" grep -qF "$(sed -n 2p <<<"$prev_ca")" <(base64 -d <<<"$ca2" | sed -n '/END/,$p')
# Deterministic and free of pooled connections: the webhook is restarted with each certificate
# (the API server keeps TLS connections alive, so a hot reload alone could be judged on a
# connection made with the previous certificate). First the new CA's certificate, until the API
# server accepts it (the new bundle is in force); then the previous CA's certificate, as a
# replica whose Secret volume is not updated yet would serve it: still trusted; then a
# certificate of a CA in no bundle: refused, which shows the check can fail.
serve_with() { # serve_with DIR-WITH-tls.crt/tls.key
    stop_webhook
    cp "$1/tls.crt" "$1/tls.key" "$work/tls/"
    start_webhook
}
mkdir -p "$work/old-ca-cert" "$work/new-ca-cert" "$work/stranger"
cp "$work/tls/tls.crt" "$work/tls/tls.key" "$work/old-ca-cert/"
save_cert "$work/new-ca-cert"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=stranger" \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$work/stranger/tls.key" -out "$work/stranger/tls.crt" 2>/dev/null
check "webhook restarted with the new CA's certificate" serve_with "$work/new-ca-cert"
trusted=""
for i in $(seq 50); do injected "$apps" "e1-$i" true --dry-run=server && { trusted=1; break; }; sleep 0.2; done
check "the API server trusts the new CA (the new caBundle is in force)" test -n "$trusted"
check "webhook restarted with the previous CA's certificate" serve_with "$work/old-ca-cert"
check "a replica still serving the previous CA's certificate stays trusted during the rollout" injected "$apps" e2 true
check "webhook restarted with a certificate of an unknown CA" serve_with "$work/stranger"
if create "$apps" e3 true >/dev/null 2>"$work/err"; then
    fail "a certificate of a CA outside the caBundle is refused" "created"
else
    check "a certificate of a CA outside the caBundle is refused" grep -qE 'x509|certificate' "$work/err"
fi
check "webhook restarted with the new CA's certificate again" serve_with "$work/new-ca-cert"
check "the certificate of the new CA serves" injected "$apps" e4 true
expect "helm upgrade after the rotation" "$HELM" upgrade "$rel" "$chart" -n "$ns" "${base_args[@]}" \
    --set 'certificates.extraDnsNames={webhook.example.com}'
check "the rotation is not repeated: CA, bundle and certificate kept" \
    test "$(secret_field ca.crt)" = "$ca2" -a "$(mwc_bundle)" = "$ca2"

# ---- failure policy -------------------------------------------------------------------------
stop_webhook
if create "$apps" f1 true >/dev/null 2>"$work/err"; then
    fail "webhook down, failurePolicy Fail: an opted-in pod is rejected" "created"
else
    check "webhook down, failurePolicy Fail: an opted-in pod is rejected" grep -q 'failed calling webhook' "$work/err"
fi
check "webhook down: a pod without the annotation is still created" untouched "$apps" f2
expect "helm upgrade to failurePolicy Ignore" "$HELM" upgrade "$rel" "$chart" -n "$ns" "${base_args[@]}" \
    --set 'certificates.extraDnsNames={webhook.example.com}' --set webhook.failurePolicy=Ignore
ignored=""
for i in $(seq 50); do untouched "$apps" "g$i" true && { ignored=1; break; }; sleep 0.2; done
check "webhook down, failurePolicy Ignore: an opted-in pod starts uninjected" test -n "$ignored"

# ---- the end-to-end suite's shape: no Deployment, webhook by URL + caBundle ------------------
expect "helm uninstall" "$HELM" uninstall "$rel" -n "$ns"
check "uninstall removes the webhook configuration" bash -c "! '$KUBECTL' get mutatingwebhookconfiguration '$mwc' >/dev/null 2>&1"
check "uninstall removes the certificate Secret" bash -c "! '$KUBECTL' get secret '$secret' -n '$ns' >/dev/null 2>&1"
if start_webhook; then ok "webhook back up"; else fail "webhook back up" "see above"; fi
expect "helm install with deployment.enabled=false, webhook.url and webhook.caBundle" \
    "$HELM" install ext "$chart" -n "$ns" --set deployment.enabled=false --set "webhook.url=$url" \
    --set "webhook.caBundle=$ca2" --set "config.passwordSafe.url=$ps_url"
check "only the webhook configuration and the ConfigMap are installed" \
    test "$(k get deployment,service,secret,serviceaccount,poddisruptionbudget -n "$ns" -l app.kubernetes.io/instance=ext -o name | wc -l)" -eq 0
in_effect=""
for _ in $(seq 100); do injected "$apps" h1 true --dry-run=server && { in_effect=1; break; }; sleep 0.2; done
check "URL registration injects" test -n "$in_effect"
expect "helm uninstall ext" "$HELM" uninstall ext -n "$ns"

# ---- existingSecret: a certificate made with openssl as docs/install.md shows ------------------
own="$work/own"; mkdir -p "$own"
(
    cd "$own"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=ps-injector-ca" -keyout ca.key -out ca.crt \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ps-injector" \
        -keyout tls.key -out tls.csr
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:own-ps-injector.%s.svc,IP:127.0.0.1\n' "$ns" >tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile tls.ext -out tls.crt
) >/dev/null 2>&1
expect "kubectl create secret tls from the openssl certificate" \
    k create secret tls own-tls -n "$ns" --cert="$own/tls.crt" --key="$own/tls.key"
stop_webhook
cp "$own/tls.crt" "$own/tls.key" "$work/tls/"
if start_webhook; then ok "webhook serves the openssl certificate"; else fail "webhook with the openssl certificate" "see above"; fi
expect "helm install with certificates.mode=existingSecret and --set-file webhook.caBundle=ca.crt (PEM)" \
    "$HELM" install own "$chart" -n "$ns" --set certificates.mode=existingSecret \
    --set certificates.existingSecret.name=own-tls --set-file webhook.caBundle="$own/ca.crt" \
    --set "webhook.url=$url" --set "config.passwordSafe.url=$ps_url"
check "the chart renders no Secret of its own in existingSecret mode" \
    test "$(k get secret -n "$ns" -l app.kubernetes.io/instance=own -o name | wc -l)" -eq 0
check "the Deployment mounts the existing Secret" \
    test "$(k get deployment own-ps-injector -n "$ns" -o jsonpath='{.spec.template.spec.volumes[?(@.name=="tls")].secret.secretName}')" = own-tls
in_effect=""
for _ in $(seq 100); do injected "$apps" own1 true --dry-run=server && { in_effect=1; break; }; sleep 0.2; done
check "existingSecret mode injects (caBundle from the PEM file)" test -n "$in_effect"
expect "helm uninstall own" "$HELM" uninstall own -n "$ns"

# ---- selfManaged (the default): GitOps path, replica race, RBAC, rotation under load ----------
. "$here/cluster_self_managed.sh"

# ---- certManager against cert-manager's real CRDs -------------------------------------------
. "$here/cluster_cert_manager.sh"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
