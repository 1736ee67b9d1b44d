# Sourced by cluster.sh (its helpers k, check, expect, ok, fail, create, injected, free_port and
# variables work, apps, chart, ps_url are in scope).
#
# certificates.mode=selfManaged, the default: the GitOps path, the replica race, RBAC, and
# rotation under load. The chart is rendered with `helm template` (no release) and applied with
# kubectl, registered by URL to two webhooks on loopback. Both run with the flags of the
# Deployment the API server stored and with a token of the chart's own ServiceAccount, so every
# API call they make is judged by the chart's RBAC. A 2-minute validity makes them rotate about
# once a minute.

smns=ps-sm
smfull=sm-ps-injector
sm_a="$(free_port)"; sm_b="$(free_port)"; sm_admin_a="$(free_port)"; sm_admin_b="$(free_port)"
sm_args=(--set "webhook.url=https://127.0.0.1:$sm_a/mutate" --set "certificates.extraIpAddresses={127.0.0.1}"
         --set "config.passwordSafe.url=$ps_url" --set certificates.selfManaged.validity=2m)
k create namespace "$smns" >/dev/null
k label namespace "$smns" pod-security.kubernetes.io/enforce=restricted >/dev/null
"$HELM" template sm "$chart" -n "$smns" "${sm_args[@]}" >"$work/sm1.yaml" 2>"$work/err" \
    || fail "helm template (selfManaged)" "$(cat "$work/err")"
"$HELM" template sm "$chart" -n "$smns" "${sm_args[@]}" >"$work/sm2.yaml" 2>"$work/err"
check "selfManaged: two renders are byte-identical" cmp -s "$work/sm1.yaml" "$work/sm2.yaml"
check "selfManaged: the render holds no key and no certificate" \
    bash -c "! grep -qE 'PRIVATE KEY|BEGIN CERTIFICATE' '$work/sm1.yaml'"
# Only the webhook configuration's entries are looked at: the cluster configuration may name a
# caBundle ConfigMap of its own.
no_cabundle_rendered() { # no_cabundle_rendered FILE: exactly one webhook configuration, no caBundle in it
    k create --dry-run=client -o json -f "$1" \
        | jq -s -e '[.[] | if .kind == "List" then .items[] else . end | select(.kind == "MutatingWebhookConfiguration")
                     | [.webhooks[].clientConfig | has("caBundle")] | any] == [false]' >/dev/null
}
check "selfManaged: the rendered webhook configuration has no caBundle" no_cabundle_rendered "$work/sm1.yaml"
"$HELM" template sm "$chart" -n "$smns" "${sm_args[@]}" --set certificates.mode=helmGenerated >"$work/hg.yaml" 2>"$work/err"
if no_cabundle_rendered "$work/hg.yaml"; then
    fail "the caBundle check sees one (helmGenerated render)" "not seen"
else
    ok "the caBundle check sees one (helmGenerated render)"
fi
expect "selfManaged: kubectl apply of the rendered manifests (no Helm release)" k apply -f "$work/sm1.yaml"
check "the webhook configuration starts without a caBundle" \
    test -z "$(k get mutatingwebhookconfiguration "$smfull" -o jsonpath='{.webhooks[*].clientConfig.caBundle}')"
if create "$apps" sm0 true --dry-run=server >/dev/null 2>"$work/err"; then
    fail "before the webhook sets the caBundle, an opted-in pod is refused" "created"
else
    ok "before the webhook sets the caBundle, an opted-in pod is refused"
fi

# The ServiceAccount's own credentials, in a kubeconfig only this run reads (never printed).
server="$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
cadata="$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
if [[ -z "$cadata" ]]; then
    cadata="$(base64 -w0 <"$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')")"
fi
(
    umask 077
    token="$(k create token "$smfull" -n "$smns" --duration=1h)"
    printf 'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "%s", certificate-authority-data: "%s"}}]\nusers: [{name: sa, user: {token: "%s"}}]\ncontexts: [{name: c, context: {cluster: c, user: sa, namespace: %s}}]\ncurrent-context: c\n' \
        "$server" "$cadata" "$token" "$smns" >"$work/sa.kubeconfig"
)
k get configmap "$smfull-config" -n "$smns" -o jsonpath='{.data.config\.yaml}' >"$work/sm-config.yaml"
mapfile -t dep_args < <(k get deployment "$smfull" -n "$smns" -o json | jq -r '.spec.template.spec.containers[0].args[]
    | select((startswith("--listen=") or startswith("--admin-listen=") or startswith("--config=")) | not)')
check "the stored Deployment runs the webhook in self-managed mode" \
    test "${dep_args[0]:-}" = serve -a -n "$(printf '%s\n' "${dep_args[@]}" | grep -x -- "--self-managed-secret=$smfull-certs")"
sm_pids=()
start_replica() { # start_replica NAME PORT ADMIN-PORT
    KUBECONFIG="$work/sa.kubeconfig" PS_WEBHOOK_NAMESPACE="$smns" PS_WEBHOOK_POD_NAME="$1" \
        "$PS_WEBHOOK_BIN" "${dep_args[@]}" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" \
        --config "$work/sm-config.yaml" --drain-delay 0s >>"$work/sm-$1.log" 2>&1 &
    sm_pids+=($!)
}
stop_replicas() {
    local p
    for p in "${sm_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${sm_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    sm_pids=()
}
trap 'stop_replicas; stop_webhook; rm -rf "$work"' EXIT
ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" == 200 ]]; }

# The replica race: both start at once on a namespace without the Secret.
start_replica replica-a "$sm_a" "$sm_admin_a"
start_replica replica-b "$sm_b" "$sm_admin_b"
both=""
for _ in $(seq 150); do ready "$sm_admin_a" && ready "$sm_admin_b" && { both=1; break; }; sleep 0.2; done
check "both replicas become ready once the caBundle is set" test -n "$both"
[[ -n "$both" ]] || tail -n 20 "$work/sm-replica-a.log" "$work/sm-replica-b.log" >&2
sm_secret() { k get secret "$smfull-certs" -n "$smns" -o json | jq -r ".data[\"$1\"] // empty"; }
sm_bundle() {
    k get mutatingwebhookconfiguration "$smfull" -o json \
        | jq -r '[.webhooks[].clientConfig.caBundle] | unique | if length == 1 then .[0] else "entries differ" end'
}
check "the replica race ends with exactly one CA" \
    test "$(sm_secret ca.crt | base64 -d | grep -c 'BEGIN CERTIFICATE')" -eq 1
check "exactly one replica generated it" \
    test "$(cat "$work"/sm-replica-*.log | grep -c 'generated a CA and a serving certificate')" -eq 1
check "every entry's caBundle is the Secret's bundle" test "$(sm_bundle)" = "$(sm_secret ca.crt)"
served_by() { # served_by PORT: the certificate served, PEM
    openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null | openssl x509 2>/dev/null
}
sm_secret ca.crt | base64 -d >"$work/sm-bundle.pem"
for r in "a $sm_a" "b $sm_b"; do
    read -r name port <<<"$r"
    served="$(served_by "$port")"
    check "replica $name serves the Secret's certificate" \
        test -n "$served" -a "$served" = "$(sm_secret tls.crt | base64 -d | openssl x509)"
    check "replica $name's certificate verifies against the caBundle" \
        curl -sS -o /dev/null --cacert "$work/sm-bundle.pem" "https://127.0.0.1:$port/mutate"
done
in_effect=""
for _ in $(seq 100); do injected "$apps" sm1 true --dry-run=server && { in_effect=1; break; }; sleep 0.2; done
check "selfManaged: the webhook configuration takes effect and injects" test -n "$in_effect"

# RBAC, asked through the API (`kubectl auth can-i --as`: an impersonated SelfSubjectAccessReview)
# and tried with the token itself.
sa_user="system:serviceaccount:$smns:$smfull"
can() { k auth can-i --as="$sa_user" "$@" >/dev/null 2>&1; }
cannot() { ! can "$@"; }
k create secret generic bystander -n "$smns" --from-literal=k=v >/dev/null
printf '{"apiVersion":"admissionregistration.k8s.io/v1","kind":"MutatingWebhookConfiguration","metadata":{"name":"bystander"}}' \
    | k create -f - >/dev/null
for verb in get update watch; do
    check "RBAC: $verb its own Secret" can "$verb" "secret/$smfull-certs" -n "$smns"
done
check "RBAC: cannot read another Secret" cannot get secret/bystander -n "$smns"
check "RBAC: cannot list Secrets" cannot list secrets -n "$smns"
check "RBAC: cannot watch another Secret" cannot watch secret/bystander -n "$smns"
check "RBAC: cannot read Secrets of other namespaces" cannot get "secret/$smfull-certs" -n "$apps"
check "RBAC: cannot delete its own Secret" cannot delete "secret/$smfull-certs" -n "$smns"
check "RBAC: patches its own webhook configuration" can patch "mutatingwebhookconfiguration/$smfull"
check "RBAC: cannot patch another webhook configuration" cannot patch mutatingwebhookconfiguration/bystander
check "RBAC: cannot create or delete webhook configurations" \
    bash -c "! '$KUBECTL' auth can-i --as='$sa_user' create mutatingwebhookconfigurations >/dev/null 2>&1 && ! '$KUBECTL' auth can-i --as='$sa_user' delete mutatingwebhookconfiguration/$smfull >/dev/null 2>&1"
check "RBAC: updates its own Lease" can update "lease/$smfull-certs" -n "$smns"
check "RBAC: cannot update another Lease" cannot update lease/bystander -n "$smns"
sa_k() { KUBECONFIG="$work/sa.kubeconfig" "$KUBECTL" "$@"; }
if sa_k get secret bystander -n "$smns" >/dev/null 2>"$work/err"; then
    fail "with its token: reading another Secret is forbidden" "it read it"
else
    check "with its token: reading another Secret is forbidden" grep -q Forbidden "$work/err"
fi
if sa_k patch mutatingwebhookconfiguration bystander --type=merge -p '{"metadata":{"labels":{"x":"y"}}}' >/dev/null 2>"$work/err"; then
    fail "with its token: patching another webhook configuration is forbidden" "it patched it"
else
    check "with its token: patching another webhook configuration is forbidden" grep -q Forbidden "$work/err"
fi
expect "with its token: reading its own Secret works (the checks above can pass)" \
    sa_k get secret "$smfull-certs" -n "$smns" -o name

# Rotation under load: dry-run creates through the API server back to back until the replicas'
# counters show two rotations and the second one's old CA has left the bundle (the last step of a
# rotation). Every creation must be injected, and creations must have happened in each of the
# three stretches: before the first switch, between the switches, after the second.
rotations() {
    curl -sS "http://127.0.0.1:$sm_admin_a/metrics" "http://127.0.0.1:$sm_admin_b/metrics" \
        | awk '/^ps_webhook_certificate_rotations_total\{result="success"\}/ {s += $NF} END {print s + 0}'
}
bundle_cas() { sm_secret ca.crt | base64 -d | grep -c 'BEGIN CERTIFICATE'; }
ca_first="$(sm_secret ca.crt | base64 -d | openssl x509 -noout -fingerprint)"
created=0 failures=0 deadline=$(( $(date +%s) + 330 )) per=(0 0 0) n_rot=0
while [[ "$(date +%s)" -lt "$deadline" ]]; do
    n_rot="$(rotations)"
    [[ "$n_rot" -ge 2 && "$(bundle_cas)" -eq 1 ]] && break
    stretch=$(( n_rot < 2 ? n_rot : 2 ))
    if injected "$apps" "rot-$created" true --dry-run=server; then
        created=$((created + 1)) per[stretch]=$(( per[stretch] + 1 ))
    else
        failures=$((failures + 1))
        echo "rotation under load: a creation failed: $(tail -n 2 "$work/err")" >&2
        [[ $failures -lt 20 ]] || break
    fi
done
echo "rotation under load: $created dry-run creations (${per[*]} in the three stretches), $failures failed, $n_rot rotations" >&2
check "two rotations, the second one's old CA retired, within 330 s of 2-minute certificates ($n_rot)" \
    test "$n_rot" -ge 2 -a "$(bundle_cas)" -eq 1
check "zero failed creations across the rotations ($created injected, $failures failed)" test "$failures" -eq 0
check "creations before, between and after the switches (${per[*]})" test "${per[0]}" -gt 0 -a "${per[1]}" -gt 0 -a "${per[2]}" -gt 0
check "the CA changed" test "$(sm_secret ca.crt | base64 -d | openssl x509 -noout -fingerprint)" != "$ca_first"
check "after the rotations every entry's caBundle is still the Secret's bundle" test "$(sm_bundle)" = "$(sm_secret ca.crt)"
sleep 3 # a replica's watch delivers the switch within a second or two
for r in "a $sm_a" "b $sm_b"; do
    read -r name port <<<"$r"
    served="$(served_by "$port")"
    check "replica $name serves the rotated certificate" \
        test -n "$served" -a "$served" = "$(sm_secret tls.crt | base64 -d | openssl x509)"
done
stop_replicas
check "no key material in the replicas' logs" bash -c "! grep -q 'PRIVATE KEY' '$work'/sm-replica-*.log"
k delete -f "$work/sm1.yaml" --wait=false >/dev/null 2>&1 || true
k delete mutatingwebhookconfiguration bystander >/dev/null 2>&1 || true
