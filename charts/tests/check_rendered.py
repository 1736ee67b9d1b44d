#!/usr/bin/env python3
"""Assert the properties of a rendered ps-injector chart that a cluster admin relies on.

    check_rendered.py --values VALUES.yaml --namespace NS RENDERED.yaml

VALUES.yaml is the values file the output was rendered with (expectations follow from it:
failure policy, certificate mode, URL mode, ...); RENDERED.yaml is `helm template` output.
Prints one line per failed property and exits 1 if any failed.

The checks are independent of how the templates are written: they read the objects as the API
server would receive them.
"""

import argparse
import base64
import os
import re
import subprocess
import sys
import tempfile

import yaml

OPT_IN = "ps-injector.io/inject"
SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease"]
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
CLUSTER_SCOPED = {"MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"}


class Checker:
    def __init__(self, name):
        self.name = name
        self.failures = []
        self.count = 0

    def check(self, cond, what):
        self.count += 1
        if not cond:
            self.failures.append(what)
        return cond


def dig(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def deep_merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def pem_certs(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", text)


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)


def check_restricted_pod(c, spec, where):
    """The restricted Pod Security Standard, control by control (policy version latest)."""
    psc = spec.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        c.check(not spec.get(f), f"{where}: {f} must not be set")
    c.check(not (psc.get("sysctls")), f"{where}: no sysctls")
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        c.check(kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {v.get('name')} type {kinds} not allowed")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = dig(psc, "seccompProfile", "type")
    c.check(psc.get("runAsUser", 1) != 0, f"{where}: pod runAsUser must not be 0")
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    c.check(len(containers) > 0, f"{where}: has containers")
    for ctr in containers:
        n = f"{where} container {ctr.get('name')}"
        sc = ctr.get("securityContext") or {}
        c.check(sc.get("privileged") is not True, f"{n}: privileged")
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{n}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        c.check("ALL" in (caps.get("drop") or []), f"{n}: capabilities must drop ALL")
        c.check(set(caps.get("add") or []) <= {"NET_BIND_SERVICE"}, f"{n}: only NET_BIND_SERVICE may be added")
        c.check(sc.get("runAsNonRoot", pod_non_root) is True, f"{n}: runAsNonRoot must be true")
        c.check(sc.get("runAsUser", 1) != 0, f"{n}: runAsUser must not be 0")
        seccomp = dig(sc, "seccompProfile", "type") or pod_seccomp
        c.check(seccomp in ("RuntimeDefault", "Localhost"), f"{n}: seccompProfile RuntimeDefault or Localhost")
        c.check(sc.get("procMount") in (None, "Default"), f"{n}: procMount")
        c.check(not any(p.get("hostPort") for p in ctr.get("ports") or []), f"{n}: no hostPort")
        # Beyond the standard: what this chart promises.
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{n}: readOnlyRootFilesystem must be true")


WORKLOAD_RULES = [
    {"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
     "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "scope": "Namespaced"},
    {"operations": ["CREATE", "UPDATE"], "apiGroups": ["batch"], "apiVersions": ["v1"],
     "resources": ["jobs", "cronjobs"], "scope": "Namespaced"},
]


def check_warn_workloads(c, warn, inject, values, enabled):
    """The warning-only entry: workloads with ps-injector.io/ annotations on their own metadata,
    answered allowed with a warning; it must never block anything."""
    if not enabled:
        c.check(warn is None, "warnWorkloads.enabled false: no warning-only entry")
        return
    if warn is None:
        c.check(False, "the warning-only workload entry is rendered")
        return
    c.check(warn.get("name") == "warn-workloads.ps-injector.io", "warning-only entry name")
    c.check(warn.get("failurePolicy") == "Ignore", "warning-only entry: failurePolicy Ignore (never blocks)")
    c.check(warn.get("sideEffects") == "None", "warning-only entry: sideEffects None")
    c.check(warn.get("admissionReviewVersions") == ["v1"], "warning-only entry: admissionReviewVersions [v1]")
    c.check(warn.get("reinvocationPolicy") == "Never", "warning-only entry: reinvocationPolicy Never")
    c.check(warn.get("rules") == WORKLOAD_RULES,
            f"warning-only entry: CREATE and UPDATE of the apps/v1 and batch/v1 workloads only (got {warn.get('rules')})")
    c.check(warn.get("namespaceSelector") == inject.get("namespaceSelector"),
            "warning-only entry: the same namespaceSelector as the injecting entry")
    conds = warn.get("matchConditions") or []
    exprs = [" ".join(m.get("expression", "").split()) for m in conds]
    c.check(any(e.startswith("has(object.metadata.annotations) &&") and "k.startsWith('ps-injector.io/')" in e
                for e in exprs),
            "warning-only entry: a matchCondition on a ps-injector.io/ key in the object's own annotations")
    cc, icc = warn.get("clientConfig") or {}, inject.get("clientConfig") or {}
    path = values["webhook"]["warnWorkloads"]["path"]
    if values["webhook"]["url"]:
        want = re.sub(r"^(https://[^/]+).*$", r"\1", values["webhook"]["url"]) + path
        c.check(cc.get("url") == want, f"warning-only entry: url {want} (got {cc.get('url')})")
        c.check(cc.get("url") != icc.get("url"), "warning-only entry: a URL of its own, not the injecting one")
    else:
        svc, isvc = cc.get("service") or {}, icc.get("service") or {}
        c.check({k: v for k, v in svc.items() if k != "path"} == {k: v for k, v in isvc.items() if k != "path"},
                "warning-only entry: the same Service as the injecting entry")
        c.check(svc.get("path") == path, f"warning-only entry: service path {path}")
        c.check(svc.get("path") != isvc.get("path"), "warning-only entry: a path of its own, not the injecting one")
    c.check(cc.get("caBundle") == icc.get("caBundle"), "warning-only entry: the same caBundle")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--chart-values", default=os.path.join(os.path.dirname(__file__), "..", "ps-injector", "values.yaml"))
    ap.add_argument("rendered")
    a = ap.parse_args()

    with open(a.chart_values) as f:
        defaults = yaml.safe_load(f)
    with open(a.values) as f:
        values = deep_merge(defaults, yaml.safe_load(f) or {})
    with open(a.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    c = Checker(os.path.basename(a.values))
    ns = a.namespace
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    one = lambda kind: (by_kind.get(kind) or [None])[0]

    deployment_enabled = values["deployment"]["enabled"]
    mode = values["certificates"]["mode"]
    url = values["webhook"]["url"]

    # --- every object ------------------------------------------------------------------------
    for d in docs:
        name = f"{d.get('kind')}/{dig(d, 'metadata', 'name')}"
        c.check(d.get("apiVersion") and dig(d, "metadata", "name"), f"{name}: apiVersion and name")
        if d.get("kind") not in CLUSTER_SCOPED:
            c.check(dig(d, "metadata", "namespace") == ns, f"{name}: namespace must be the release namespace {ns}")
        labels = dig(d, "metadata", "labels") or {}
        c.check(labels.get("app.kubernetes.io/instance") and labels.get("app.kubernetes.io/name"),
                f"{name}: standard labels")
    self_managed = deployment_enabled and mode == "selfManaged"
    rbac_kinds = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    if not self_managed:
        # Outside selfManaged the webhook needs no Kubernetes API access: no RBAC objects at all.
        for kind in rbac_kinds:
            c.check(kind not in by_kind, f"no {kind} is rendered (the webhook needs no API access)")
    # No key material and no caBundle in a render that must be GitOps-stable.
    if mode in ("selfManaged", "certManager") and deployment_enabled:
        text = yaml.safe_dump_all(docs)
        c.check("PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text,
                f"{mode}: no key material rendered")

    # --- MutatingWebhookConfiguration ----------------------------------------------------------
    mwcs = by_kind.get("MutatingWebhookConfiguration") or []
    c.check(len(mwcs) == 1, "exactly one MutatingWebhookConfiguration")
    mwc = mwcs[0] if mwcs else {}
    hooks = mwc.get("webhooks") or []
    warn_enabled = values["webhook"]["warnWorkloads"]["enabled"]
    c.check(len(hooks) == 1 + int(bool(warn_enabled)),
            "the injecting webhook, and the warning-only workload entry when enabled")
    w = hooks[0] if hooks else {}
    check_warn_workloads(c, hooks[1] if len(hooks) > 1 else None, w, values, warn_enabled)
    c.check(re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+){2,}", w.get("name", "")) is not None,
            "webhook name is fully qualified (3+ segments)")
    c.check(w.get("admissionReviewVersions") == ["v1"], "admissionReviewVersions [v1]")
    c.check(w.get("sideEffects") == "None", "sideEffects None (dry-run requests are safe)")
    c.check(w.get("failurePolicy") == values["webhook"]["failurePolicy"],
            f"failurePolicy {values['webhook']['failurePolicy']} from values")
    c.check(w.get("timeoutSeconds") == values["webhook"]["timeoutSeconds"], "timeoutSeconds from values")
    c.check(1 <= (w.get("timeoutSeconds") or 0) <= 30, "timeoutSeconds within 1..30")
    c.check(w.get("reinvocationPolicy") == values["webhook"]["reinvocationPolicy"], "reinvocationPolicy from values")
    rules = w.get("rules") or []
    c.check(rules == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            f"rules: CREATE of core/v1 pods only (got {rules})")

    # Scoping: the opt-in matchCondition, guarded against pods without annotations.
    conds = w.get("matchConditions") or []
    optin = [m for m in conds if OPT_IN in m.get("expression", "")]
    c.check(len(optin) == 1, "one matchCondition on the opt-in annotation")
    if optin:
        e = " ".join(optin[0]["expression"].split())
        c.check(e.startswith("has(object.metadata.annotations) &&"),
                "opt-in condition is guarded by has(object.metadata.annotations) first")
        c.check(f"'{OPT_IN}' in object.metadata.annotations" in e,
                "opt-in condition requires the annotation key to be present")
        for no in ("'false'", "'no'", "'off'", "'0'"):
            c.check(no in e, f"opt-in condition lets a clear {no} through untouched")
    extra = values["webhook"]["extraMatchConditions"]
    c.check(len(conds) == 1 + len(extra), "extraMatchConditions appended")
    for m in conds:
        c.check(re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", m.get("name", "")) is not None,
                f"matchCondition name {m.get('name')!r} is a qualified name")

    sel = w.get("namespaceSelector") or {}
    notin = [e for e in sel.get("matchExpressions") or []
             if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "NotIn"]
    c.check(len(notin) == 1, "namespaceSelector has a NotIn on kubernetes.io/metadata.name")
    excluded = set(notin[0]["values"]) if notin else set()
    for n in SYSTEM_NAMESPACES + [ns] + list(values["webhook"]["excludeNamespaces"]):
        c.check(n in excluded, f"namespaceSelector excludes {n}")
    user_sel = values["webhook"]["namespaceSelector"] or {}
    if user_sel.get("matchLabels"):
        c.check(sel.get("matchLabels") == user_sel["matchLabels"], "namespaceSelector keeps the user's matchLabels")
    for e in user_sel.get("matchExpressions") or []:
        c.check(e in sel.get("matchExpressions", []), f"namespaceSelector keeps the user's expression {e}")
    if values["webhook"]["objectSelector"]:
        c.check(w.get("objectSelector") == values["webhook"]["objectSelector"], "objectSelector from values")
    else:
        c.check(not w.get("objectSelector"), "no objectSelector by default")

    cc = w.get("clientConfig") or {}
    if url:
        c.check(cc.get("url") == url and "service" not in cc, "clientConfig.url from webhook.url, no service")
    else:
        svc = cc.get("service") or {}
        services = by_kind.get("Service") or []
        c.check(len(services) == 1, "one Service")
        s = services[0] if services else {}
        c.check(svc.get("name") == dig(s, "metadata", "name") and svc.get("namespace") == ns,
                "clientConfig.service names the chart's Service")
        https = [p for p in dig(s, "spec", "ports", default=[]) if p.get("name") == "https"]
        c.check(https and svc.get("port") == https[0]["port"], "clientConfig.service.port is the Service's https port")
        c.check(svc.get("path") == values["webhook"]["path"], "clientConfig.service.path")

    inject_from = dig(mwc, "metadata", "annotations", "cert-manager.io/inject-ca-from")
    bundle_pem = ""
    if self_managed:
        c.check("caBundle" not in cc, "selfManaged: no caBundle in the chart (the webhook sets it)")
        c.check(inject_from is None, "no inject-ca-from outside certManager mode")
    elif deployment_enabled and mode == "certManager":
        c.check("caBundle" not in cc, "certManager: no caBundle in the chart (cainjector fills it)")
        certs = {dig(x, "metadata", "name"): x for x in by_kind.get("Certificate") or []}
        want = f"{ns}/{dig(mwc, 'metadata', 'name')}"
        c.check(inject_from == want, f"certManager: inject-ca-from {want}")
        leaf = certs.get(dig(mwc, "metadata", "name"))
        c.check(leaf is not None, "certManager: the Certificate named by inject-ca-from is rendered")
    else:
        c.check(inject_from is None, "no inject-ca-from outside certManager mode")
        c.check(bool(cc.get("caBundle")), "caBundle is set")
        try:
            bundle_pem = base64.b64decode(cc.get("caBundle", ""), validate=True).decode()
        except Exception as e:  # noqa: BLE001
            c.check(False, f"caBundle is base64: {e}")
        c.check(len(pem_certs(bundle_pem)) >= 1, "caBundle holds PEM certificates")

    # --- ConfigMap -----------------------------------------------------------------------------
    cms = [x for x in by_kind.get("ConfigMap") or [] if "config.yaml" in (x.get("data") or {})]
    c.check(len(cms) == 1, "one ConfigMap with config.yaml")
    cfg = yaml.safe_load(cms[0]["data"]["config.yaml"]) if cms else {}
    cfg = cfg or {}
    want_url = dig(values, "config", "passwordSafe", "url") or None
    c.check(dig(cfg, "passwordSafe", "url") == want_url, "config passwordSafe.url from values (absent when empty)")
    agent_image = dig(values, "config", "agent", "image")
    if not agent_image:
        ai = values["agentImage"]
        agent_image = f"{ai['repository']}@{ai['digest']}" if ai.get("digest") else \
            f"{ai['repository']}:{ai.get('tag') or ''}"
        c.check(str(dig(cfg, "agent", "image", default="")).startswith(agent_image),
                f"config agent.image from agentImage ({agent_image})")
    else:
        c.check(dig(cfg, "agent", "image") == agent_image, "config agent.image as given")

    # --- Deployment ----------------------------------------------------------------------------
    dep = one("Deployment")
    if not deployment_enabled:
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy",
                     "Secret", "Certificate", "Issuer"):
            c.check(kind not in by_kind, f"deployment.enabled=false renders no {kind}")
    else:
        c.check(dep is not None, "a Deployment")
        dep = dep or {}
        spec = dig(dep, "spec", "template", "spec", default={})
        c.check(dig(dep, "spec", "replicas") == values["replicaCount"], "replicas from values")
        c.check(values["replicaCount"] >= 2 or c.name != "default.yaml", "at least 2 replicas by default")
        check_restricted_pod(c, spec, "webhook pod")
        c.check(spec.get("automountServiceAccountToken") is self_managed,
                "service account token mounted only for self-managed certificates")
        tmpl_ann = dig(dep, "spec", "template", "metadata", "annotations") or {}
        c.check(not any(k.startswith("checksum/") for k in tmpl_ann),
                "no checksum annotation: config and certificates are hot-reloaded, not rolled")
        pod_labels = dig(dep, "spec", "template", "metadata", "labels") or {}
        match = dig(dep, "spec", "selector", "matchLabels") or {}
        c.check(match and all(pod_labels.get(k) == v for k, v in match.items()), "selector matches pod labels")
        ctrs = spec.get("containers") or []
        c.check(len(ctrs) == 1, "one container")
        ctr = ctrs[0] if ctrs else {}
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports") or []}
        c.check(set(ports) == {"https", "admin"}, "container ports https and admin")
        args = ctr.get("args") or []
        c.check(args[:1] == ["serve"], "runs `ps-webhook serve`")
        arg = lambda flag: next((x.split("=", 1)[1] for x in args if x.startswith(flag + "=")), None)
        c.check((arg("--listen") or "").endswith(f":{ports.get('https')}"), "--listen on the https port")
        c.check((arg("--admin-listen") or "").endswith(f":{ports.get('admin')}"), "--admin-listen on the admin port")
        mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts") or []}
        c.check(not any("subPath" in m for m in mounts.values()),
                "no subPath mounts (they would never see ConfigMap/Secret updates)")
        vols = {v["name"]: v for v in spec.get("volumes") or []}

        def volume_for(path):
            for mp, m in mounts.items():
                if path and path.startswith(mp.rstrip("/") + "/"):
                    return vols.get(m["name"]), path[len(mp.rstrip("/")) + 1:]
            return None, None

        v, rel = volume_for(arg("--config"))
        c.check(v is not None and dig(v, "configMap", "name") == dig(cms[0] if cms else {}, "metadata", "name")
                and rel == "config.yaml", "--config is config.yaml of the chart's ConfigMap")
        tls_secret = None
        if self_managed:
            tls_secret = arg("--self-managed-secret")
            s_ = one("Service") or {}
            c.check(arg("--webhook-configuration") == dig(mwc, "metadata", "name"),
                    "--webhook-configuration is the chart's MutatingWebhookConfiguration")
            c.check(arg("--service") == dig(s_, "metadata", "name"), "--service is the chart's Service")
            c.check(arg("--cert-validity") == values["certificates"]["selfManaged"]["validity"], "--cert-validity from values")
            c.check(sorted(x.split("=", 1)[1] for x in args if x.startswith("--dns-name="))
                    == sorted(values["certificates"]["extraDnsNames"]), "--dns-name from extraDnsNames")
            c.check(arg("--tls-cert") is None and "tls" not in vols, "selfManaged: no certificate volume")
            env = {e["name"]: e for e in ctr.get("env") or []}
            c.check(dig(env.get("PS_WEBHOOK_NAMESPACE") or {}, "valueFrom", "fieldRef", "fieldPath") == "metadata.namespace",
                    "PS_WEBHOOK_NAMESPACE from the downward API")
            check_rbac(c, by_kind, ns, spec.get("serviceAccountName"), tls_secret, arg("--lease"),
                       dig(mwc, "metadata", "name"))
        for flag, fname in () if self_managed else (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
            v, rel = volume_for(arg(flag))
            c.check(v is not None and "secret" in v, f"{flag} comes from a Secret volume")
            if v and "secret" in v:
                tls_secret = v["secret"]["secretName"]
                items = v["secret"].get("items") or []
                c.check(rel in [i["path"] for i in items], f"{flag} file is projected from the Secret")
                c.check("ca.key" not in [i["key"] for i in items], "the CA key is not mounted into the webhook")
        if mode == "existingSecret":
            c.check(tls_secret == values["certificates"]["existingSecret"]["name"], "existingSecret name mounted")
        probes = [ctr.get("livenessProbe"), ctr.get("readinessProbe")]
        c.check(dig(probes[0], "httpGet", "path") == "/livez" and dig(probes[0], "httpGet", "port") == "admin",
                "liveness probe /livez on the admin port")
        c.check(dig(probes[1], "httpGet", "path") == "/readyz" and dig(probes[1], "httpGet", "port") == "admin",
                "readiness probe /readyz on the admin port")
        c.check(dig(ctr, "resources", "requests", "cpu") and dig(ctr, "resources", "requests", "memory")
                and dig(ctr, "resources", "limits", "memory"), "resource requests and a memory limit")
        aff = dig(spec, "affinity", "podAntiAffinity")
        spread = spec.get("topologySpreadConstraints")
        if not values["affinity"] and values["podAntiAffinity"] != "none":
            c.check(aff is not None, "pod anti-affinity between replicas")
            terms = (aff or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []
            terms = [t["podAffinityTerm"] for t in terms] + \
                ((aff or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            c.check(any(dig(t, "labelSelector", "matchLabels") == match for t in terms),
                    "anti-affinity selects the webhook's own pods")
        if values["zoneSpread"] and not values["topologySpreadConstraints"]:
            c.check(bool(spread) and dig(spread, 0, "labelSelector", "matchLabels") == match,
                    "zone topology spread over the webhook's pods")
        c.check((dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") == 0)
                or values["updateStrategy"] != defaults["updateStrategy"], "rolling update keeps every replica")
        c.check(spec.get("terminationGracePeriodSeconds", 30) >= 15, "grace period covers drain + shutdown")

        # Service selects the pods.
        s = one("Service") or {}
        ssel = dig(s, "spec", "selector") or {}
        c.check(ssel and all(pod_labels.get(k) == v for k, v in ssel.items()), "Service selects the webhook pods")
        c.check({p.get("targetPort") for p in dig(s, "spec", "ports", default=[])} <= set(ports),
                "Service targets named container ports")

        # ServiceAccount without an automounted token (pods opt in with selfManaged).
        sa = one("ServiceAccount")
        if values["serviceAccount"]["create"]:
            c.check(sa is not None and sa.get("automountServiceAccountToken") is False,
                    "ServiceAccount without automounted token")
            c.check(spec.get("serviceAccountName") == dig(sa or {}, "metadata", "name"), "pod uses the ServiceAccount")

        # PodDisruptionBudget.
        pdb = one("PodDisruptionBudget")
        if values["podDisruptionBudget"]["enabled"]:
            c.check(pdb is not None, "a PodDisruptionBudget")
            pspec = (pdb or {}).get("spec") or {}
            c.check(dig(pspec, "selector", "matchLabels") == match, "PDB selects the webhook pods")
            c.check(("minAvailable" in pspec) != ("maxUnavailable" in pspec), "PDB sets exactly one of min/max")
        else:
            c.check(pdb is None, "no PDB when disabled")

        # Certificates per mode.
        secrets = {dig(x, "metadata", "name"): x for x in by_kind.get("Secret") or []}
        if mode == "selfManaged":
            c.check(not secrets, "selfManaged: the chart renders no Secret (the webhook creates it)")
        elif mode == "helmGenerated":
            sec = secrets.get(tls_secret)
            c.check(sec is not None, f"helmGenerated mode: Secret {tls_secret} rendered")
            if sec:
                data = {k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()}
                c.check(set(data) >= {"tls.crt", "tls.key", "ca.crt", "ca.key"}, "helm Secret keys")
                c.check(data.get("ca.crt") == bundle_pem, "caBundle is the Secret's ca.crt")
                for k in ("ps-injector.io/cert-not-after", "ps-injector.io/ca-not-after", "ps-injector.io/cert-sans"):
                    c.check(dig(sec, "metadata", "annotations", k), f"helm Secret annotation {k}")
                check_serving_cert(c, data, values, ns, dig(s, "metadata", "name"))
        elif mode == "certManager":
            certs = {dig(x, "metadata", "name"): x for x in by_kind.get("Certificate") or []}
            leaf = certs.get(dig(mwc, "metadata", "name")) or {}
            c.check(dig(leaf, "spec", "secretName") == tls_secret, "certManager: Certificate writes the mounted Secret")
            svc_name = dig(s, "metadata", "name")
            for n in (f"{svc_name}.{ns}.svc",):
                c.check(n in (dig(leaf, "spec", "dnsNames") or []), f"certManager: dnsNames include {n}")
            c.check(dig(leaf, "spec", "privateKey", "rotationPolicy") == "Always", "leaf key rotates")
            ref = values["certificates"]["certManager"]["issuerRef"]
            if ref:
                c.check(dig(leaf, "spec", "issuerRef", "name") == ref["name"], "certManager: issuerRef from values")
                c.check("Issuer" not in by_kind, "certManager with issuerRef: no chart Issuers")
            else:
                issuers = {dig(x, "metadata", "name"): x for x in by_kind.get("Issuer") or []}
                ca_issuer = issuers.get(dig(leaf, "spec", "issuerRef", "name"))
                c.check(ca_issuer is not None and dig(ca_issuer, "spec", "ca", "secretName"),
                        "certManager: the leaf's issuer is a chart CA Issuer")
                ca_cert = next((x for x in certs.values() if dig(x, "spec", "isCA")), None)
                c.check(ca_cert is not None and dig(ca_cert, "spec", "secretName") == dig(ca_issuer or {}, "spec", "ca", "secretName"),
                        "certManager: the CA Certificate feeds the CA Issuer")
                c.check(dig(ca_cert or {}, "spec", "privateKey", "rotationPolicy") == "Never",
                        "certManager: the CA keeps its key on renewal")
                c.check(dig(issuers.get(dig(ca_cert or {}, "spec", "issuerRef", "name")) or {}, "spec", "selfSigned") == {},
                        "certManager: the CA is issued by a self-signed Issuer")
        else:
            c.check(not secrets, "existingSecret: the chart renders no Secret")

        # Optional objects.
        c.check(("NetworkPolicy" in by_kind) == values["networkPolicy"]["enabled"], "NetworkPolicy only when enabled")
        if values["networkPolicy"]["enabled"]:
            np = one("NetworkPolicy")
            c.check(dig(np, "spec", "podSelector", "matchLabels") == match, "NetworkPolicy selects the webhook pods")
            if self_managed:
                c.check(dig(np, "spec", "egress") == values["networkPolicy"]["apiServerEgress"]
                        and "Egress" in dig(np, "spec", "policyTypes", default=[]),
                        "NetworkPolicy allows egress only to the API server (selfManaged)")
            else:
                c.check(dig(np, "spec", "egress") == [] and "Egress" in dig(np, "spec", "policyTypes", default=[]),
                        "NetworkPolicy denies all egress")
            ing_ports = [p.get("port") for r in dig(np, "spec", "ingress", default=[]) for p in r.get("ports") or []]
            c.check("https" in ing_ports, "NetworkPolicy admits the admission port")
        c.check(("ServiceMonitor" in by_kind) == values["metrics"]["serviceMonitor"]["enabled"],
                "ServiceMonitor only when enabled")
        if "ServiceMonitor" in by_kind:
            sm = one("ServiceMonitor")
            c.check(dig(sm, "spec", "endpoints", 0, "port") == "admin"
                    and dig(sm, "spec", "endpoints", 0, "path") == "/metrics", "ServiceMonitor scrapes admin /metrics")
            sm_sel = dig(sm, "spec", "selector", "matchLabels") or {}
            svc_labels = dig(s, "metadata", "labels") or {}
            c.check(sm_sel and all(svc_labels.get(k) == v for k, v in sm_sel.items()),
                    "ServiceMonitor selects the Service")
        c.check(("PrometheusRule" in by_kind) == values["metrics"]["prometheusRule"]["enabled"],
                "PrometheusRule only when enabled")
        if "PrometheusRule" in by_kind:
            exprs = " ".join(r.get("expr", "") for g in dig(one("PrometheusRule"), "spec", "groups", default=[])
                             for r in g.get("rules") or [])
            for metric in ("ps_webhook_config_reloads_total", "ps_webhook_certificate_reloads_total",
                           "ps_webhook_admission_duration_seconds_bucket",
                           "ps_webhook_certificate_expiry_timestamp_seconds",
                           "ps_webhook_certificate_rotations_total"):
                c.check(metric in exprs, f"PrometheusRule watches {metric}")

    for f in c.failures:
        print(f"FAIL  {c.name}: {f}")
    print(f"{c.name}: {c.count - len(c.failures)} of {c.count} properties hold")
    return 1 if c.failures else 0


def check_rbac(c, by_kind, ns, sa, secret, lease, mwc_name):
    """selfManaged: exactly one Role and one ClusterRole, each bound to the webhook's account,
    granting only its own Secret, Lease and MutatingWebhookConfiguration (plus create)."""
    for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
        c.check(len(by_kind.get(kind) or []) == 1, f"selfManaged: exactly one {kind}")
    norm = lambda rules: sorted(
        (tuple(r.get("apiGroups") or []), tuple(r.get("resources") or []), tuple(sorted(r.get("resourceNames") or [])),
         tuple(sorted(r.get("verbs") or []))) for r in rules or [])
    role = (by_kind.get("Role") or [{}])[0]
    c.check(norm(role.get("rules")) == norm([
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "update", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]), "selfManaged Role: its own Secret and Lease only (get/update/watch by name, create)")
    crole = (by_kind.get("ClusterRole") or [{}])[0]
    c.check(norm(crole.get("rules")) == norm([
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": [mwc_name], "verbs": ["get", "patch"]},
    ]), "selfManaged ClusterRole: get/patch of its own MutatingWebhookConfiguration only")
    for kind, role_obj in (("RoleBinding", role), ("ClusterRoleBinding", crole)):
        b = (by_kind.get(kind) or [{}])[0]
        c.check(dig(b, "roleRef", "name") == dig(role_obj, "metadata", "name")
                and b.get("subjects") == [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
                f"selfManaged {kind}: the role, to the webhook's ServiceAccount only")


def check_serving_cert(c, data, values, ns, svc):
    """The helm-generated certificate chains to the caBundle, names the Service, matches its key."""
    with tempfile.TemporaryDirectory() as d:
        for k in ("tls.crt", "tls.key", "ca.crt"):
            with open(os.path.join(d, k), "w") as f:
                f.write(data.get(k, ""))
        names = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc"] + list(values["certificates"]["extraDnsNames"])
        for n in names:
            r = openssl("verify", "-CAfile", os.path.join(d, "ca.crt"), "-purpose", "sslserver",
                        "-verify_hostname", n, os.path.join(d, "tls.crt"))
            c.check(r.returncode == 0, f"helm cert verifies against the caBundle for {n}: {r.stderr.strip()}")
        for ip in values["certificates"]["extraIpAddresses"]:
            r = openssl("verify", "-CAfile", os.path.join(d, "ca.crt"), "-verify_ip", ip, os.path.join(d, "tls.crt"))
            c.check(r.returncode == 0, f"helm cert verifies for IP {ip}: {r.stderr.strip()}")
        pub_crt = openssl("x509", "-noout", "-pubkey", "-in", os.path.join(d, "tls.crt")).stdout
        pub_key = openssl("pkey", "-pubout", "-in", os.path.join(d, "tls.key")).stdout
        c.check(pub_crt and pub_crt == pub_key, "helm cert matches its key")
        days = values["certificates"]["helmGenerated"]["certValidityDays"]
        r = openssl("x509", "-noout", "-checkend", str((days - 1) * 86400), "-in", os.path.join(d, "tls.crt"))
        c.check(r.returncode == 0, f"helm cert is valid for about {days} days")
        r = openssl("x509", "-noout", "-checkend", str((days + 1) * 86400), "-in", os.path.join(d, "tls.crt"))
        c.check(r.returncode != 0, f"helm cert is not valid for more than {days} days")


if __name__ == "__main__":
    sys.exit(main())
