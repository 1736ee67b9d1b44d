# Sourced by cluster.sh (its helpers k, check, expect, ok, fail, injected, free_port and
# variables work, apps, chart, ps_url, PS_WEBHOOK_BIN are in scope).
#
# certificates.mode=certManager against cert-manager's real CRDs and its real CA injector
# (v1.19.1: deploy/crds and pkg/controller/cainjector of the main module, which the Go module proxy
# serves; PS_CERT_MANAGER_CRDS names the CRD directory, PS_CAINJECTOR_BIN the injector built from
# charts/tests/cainjector). cert-manager's controller (the issuer) is not run: its main and wiring
# live in cert-manager's cmd/ modules, which the proxy does not serve (docs/install.md §3.2 says
# what this proves and what it does not).
# Proven here: the real API server accepts the chart's Issuers and Certificates under the real
# schemas (and refuses an invalid one, so validation is on); cert-manager's CA injector fills every
# entry's caBundle from the Certificate's Secret (inject-ca-from -> Certificate -> spec.secretName
# -> ca.crt) and adds a new CA next to the old one; the webhook serves from a Secret of the shape cert-manager
# writes (tls.crt, tls.key, ca.crt, its annotations) and picks up a renewal without a restart.

: "${PS_CERT_MANAGER_CRDS:?the directory of cert-manager v1.19.1 deploy/crds (charts/test downloads it)}"
: "${PS_CAINJECTOR_BIN:?cert-manager v1.19.1 CA injector (charts/test builds charts/tests/cainjector)}"
cmns=ps-cm
cmfull=cm-ps-injector
cm_port="$(free_port)"; cm_admin="$(free_port)"
for crd in certificates issuers clusterissuers certificaterequests; do
    expect "cert-manager CRD $crd.cert-manager.io (v1.19.1) installed" \
        k apply --server-side -f "$PS_CERT_MANAGER_CRDS/cert-manager.io_$crd.yaml"
done
expect "cert-manager CRDs established" k wait --for=condition=Established --timeout=60s \
    crd/certificates.cert-manager.io crd/issuers.cert-manager.io crd/clusterissuers.cert-manager.io crd/certificaterequests.cert-manager.io
k create namespace "$cmns" >/dev/null
"$HELM" template cm "$chart" -n "$cmns" --set certificates.mode=certManager \
    --set "webhook.url=https://127.0.0.1:$cm_port/mutate" --set "certificates.extraIpAddresses={127.0.0.1}" \
    --set "config.passwordSafe.url=$ps_url" >"$work/cm.yaml" 2>"$work/err" || fail "helm template (certManager)" "$(cat "$work/err")"
expect "the real API server accepts the chart's Issuers and Certificates (kubectl apply)" k apply -f "$work/cm.yaml"
check "the chart's self-signed Issuer, CA Certificate, CA Issuer and serving Certificate are stored" \
    test "$(k get issuers.cert-manager.io,certificates.cert-manager.io -n "$cmns" -o name | sort | tr '\n' ' ')" = \
    "certificate.cert-manager.io/$cmfull certificate.cert-manager.io/$cmfull-ca issuer.cert-manager.io/$cmfull-ca issuer.cert-manager.io/$cmfull-selfsigned "
check "the stored serving Certificate names the Service and the URL's IP" \
    test "$(k get certificate "$cmfull" -n "$cmns" -o json | jq -c '[.spec.dnsNames[-1], .spec.ipAddresses, .spec.privateKey.rotationPolicy]')" \
    = "[\"$cmfull.$cmns.svc\",[\"127.0.0.1\"],\"Always\"]"
k get certificate "$cmfull" -n "$cmns" -o json | jq '.metadata = {name: "invalid-algorithm"} | .spec.privateKey.algorithm = "DSA"' >"$work/bad-cert.json"
if k create -n "$cmns" -f "$work/bad-cert.json" >/dev/null 2>"$work/err"; then
    fail "the real schema refuses an invalid Certificate (privateKey.algorithm DSA)" "accepted"
else
    check "the real schema refuses an invalid Certificate (privateKey.algorithm DSA)" grep -q 'algorithm' "$work/err"
fi

# What cert-manager's CA issuer would write: a CA, a leaf for the Certificate's names signed by
# it, in Secret spec.secretName with tls.crt, tls.key and ca.crt.
secret_name="$(k get certificate "$cmfull" -n "$cmns" -o jsonpath='{.spec.secretName}')"
cm_issue() { # cm_issue DIR DAYS: ca.crt/ca.key (reused when present) and a new leaf
    (
        cd "$1"
        [[ -f ca.key ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=$cmfull-ca" -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cmfull" -keyout tls.key -out tls.csr
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s.%s.svc,IP:127.0.0.1\n' \
            "$cmfull" "$cmns" >tls.ext
        openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$2" -extfile tls.ext -out tls.crt
    ) >/dev/null 2>&1
}
mkdir -p "$work/cm-issued"
cm_issue "$work/cm-issued" 90
# The annotations cert-manager's issuing controller puts on the Secret: the CA injector uses only
# Secrets whose certificate-name names the Certificate.
cm_secret() { # cm_secret DIR: the Secret as cert-manager writes it, to stdout
    k create secret generic "$secret_name" -n "$cmns" --type=kubernetes.io/tls --from-file=tls.crt="$1/tls.crt" \
        --from-file=tls.key="$1/tls.key" --from-file=ca.crt="$1/ca.crt" --dry-run=client -o json \
        | jq --arg c "$cmfull" '.metadata.annotations = {"cert-manager.io/certificate-name": $c, "cert-manager.io/issuer-name": ($c + "-ca"),
            "cert-manager.io/issuer-kind": "Issuer", "cert-manager.io/issuer-group": "cert-manager.io"}'
}
# cert-manager's CA injector (pkg/controller/cainjector of v1.19.1, wired by charts/tests/cainjector
# as its own main does), with the admin's kubeconfig.
from="$(k get mutatingwebhookconfiguration "$cmfull" -o jsonpath='{.metadata.annotations.cert-manager\.io/inject-ca-from}')"
check "the webhook configuration asks the CA injector for its own Certificate" test "$from" = "$cmns/$cmfull"
"$PS_CAINJECTOR_BIN" >>"$work/cainjector.log" 2>&1 &
cainjector_pid=$!
trap 'kill -TERM "$cainjector_pid" 2>/dev/null; stop_webhook; rm -rf "$work"' EXIT
cm_bundles() { k get mutatingwebhookconfiguration "$cmfull" -o json | jq -r '[.webhooks[].clientConfig.caBundle // ""] | unique | join(",")'; }
cm_wait_bundle() { # cm_wait_bundle BASE64: until every entry's caBundle is it (60 s)
    for _ in $(seq 300); do [[ "$(cm_bundles)" == "$1" ]] && return 0; sleep 0.2; done
    return 1
}
sleep 3 # the injector has started its informers and seen the annotated configuration
check "no caBundle while the Certificate has no Secret yet" test -z "$(cm_bundles)"
# First without cert-manager's annotations: a Secret of that name not written for the Certificate.
cm_secret "$work/cm-issued" | jq 'del(.metadata.annotations)' | k create -f - >/dev/null
sleep 3
check "the CA injector ignores a Secret not written for the Certificate (no certificate-name annotation)" test -z "$(cm_bundles)"
cm_secret "$work/cm-issued" | k replace -f - >/dev/null
check "cert-manager's CA injector sets every entry's caBundle to the Certificate's Secret's ca.crt" \
    cm_wait_bundle "$(base64 -w0 <"$work/cm-issued/ca.crt")"
[[ "$(cm_bundles)" == "$(base64 -w0 <"$work/cm-issued/ca.crt")" ]] || tail -n 20 "$work/cainjector.log" >&2
# The webhook as the rendered Deployment runs it, with the files its Secret volume projects.
mkdir -p "$work/cm-tls"
cm_mount() { k get secret "$secret_name" -n "$cmns" -o json | jq -r '.data["tls.crt"]' | base64 -d >"$work/cm-tls/tls.crt.new" \
    && k get secret "$secret_name" -n "$cmns" -o json | jq -r '.data["tls.key"]' | base64 -d >"$work/cm-tls/tls.key.new" \
    && mv "$work/cm-tls/tls.key.new" "$work/cm-tls/tls.key" && mv "$work/cm-tls/tls.crt.new" "$work/cm-tls/tls.crt"; }
cm_mount
check "the Deployment mounts exactly tls.crt and tls.key of the Certificate's Secret" \
    test "$(k get -f "$work/cm.yaml" -o json 2>/dev/null | jq -c '[.items[] | select(.kind == "Deployment") | .spec.template.spec.volumes[] | select(.name == "tls") | .secret | .secretName, [.items[].key]] | .[]' | tr '\n' ' ')" \
    = "\"$secret_name\" [\"tls.crt\",\"tls.key\"] "
k get configmap "$cmfull-config" -n "$cmns" -o jsonpath='{.data.config\.yaml}' >"$work/cm-config.yaml"
"$PS_WEBHOOK_BIN" serve --listen "127.0.0.1:$cm_port" --admin-listen "127.0.0.1:$cm_admin" \
    --tls-cert "$work/cm-tls/tls.crt" --tls-key "$work/cm-tls/tls.key" --config "$work/cm-config.yaml" \
    --reload-interval 200ms --drain-delay 0s >>"$work/cm-webhook.log" 2>&1 &
cm_pid=$!
trap 'kill -TERM "$cm_pid" "$cainjector_pid" 2>/dev/null; stop_webhook; rm -rf "$work"' EXIT
in_effect=""
for _ in $(seq 100); do injected "$apps" cm1 true --dry-run=server && { in_effect=1; break; }; sleep 0.2; done
check "certManager: the webhook serving the Secret cert-manager's shape injects through the injected caBundle" test -n "$in_effect"
# A renewal as cert-manager does it (rotationPolicy Always: new key, same CA): the Secret's data
# changes, the kubelet updates the volume, the webhook reloads.
reloads() { curl -sS "http://127.0.0.1:$cm_admin/metrics" | awk '/^ps_webhook_certificate_reloads_total\{result="success"\}/ {print $NF}'; }
r0="$(reloads)"
cm_issue "$work/cm-issued" 90
cm_secret "$work/cm-issued" | k replace -f - >/dev/null
cm_mount
for _ in $(seq 50); do [[ "$(reloads)" != "$r0" ]] && break; sleep 0.1; done
check "certManager: a renewed Secret is reloaded without a restart" test "$(reloads)" != "$r0"
check "certManager: the renewed certificate serves" injected "$apps" cm2 true --dry-run=server
check "... and the CA injector left the caBundle alone (same CA)" test "$(cm_bundles)" = "$(base64 -w0 <"$work/cm-issued/ca.crt")"
# A new CA (an issuer of your own that changed its CA): the injector follows the Secret's ca.crt.
# cert-manager 1.19 merges (feature CAInjectorMerging, on by default): the new CA is appended to
# the bundle and the old one stays until it expires, so replicas still serving a certificate of
# the old CA stay trusted.
old_ca_b64="$(base64 -w0 <"$work/cm-issued/ca.crt")"
rm "$work/cm-issued/ca.key"
cm_issue "$work/cm-issued" 90
cm_secret "$work/cm-issued" | k replace -f - >/dev/null
check "certManager: a new CA in the Secret's ca.crt is added to every entry's caBundle by the CA injector, next to the old one" \
    cm_wait_bundle "$(cat <(base64 -d <<<"$old_ca_b64") "$work/cm-issued/ca.crt" | base64 -w0)"
r0="$(reloads)"
cm_mount
for _ in $(seq 50); do [[ "$(reloads)" != "$r0" ]] && break; sleep 0.1; done
check "certManager: the webhook reloads the certificate of the new CA" test "$(reloads)" != "$r0"
check "certManager: the certificate of the new CA serves" injected "$apps" cm3 true --dry-run=server
kill -TERM "$cm_pid" "$cainjector_pid" 2>/dev/null; wait "$cm_pid" "$cainjector_pid" 2>/dev/null || true
check "no key material in the CA injector's log" bash -c "! grep -q 'PRIVATE KEY' '$work/cainjector.log'"
k delete -f "$work/cm.yaml" --wait=false >/dev/null 2>&1 || true
