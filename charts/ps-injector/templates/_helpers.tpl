{{/*
Names. Object names are limited to 63 characters where they become labels or DNS labels.
*/}}
{{- define "ps-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ps-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ps-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the webhook pods; never change them in an upgrade. */}}
{{- define "ps-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ps-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "ps-injector.labels" -}}
helm.sh/chart: {{ include "ps-injector.chart" . }}
{{ include "ps-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ps-injector
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ps-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ps-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; tag defaults to the appVersion. */}}
{{- define "ps-injector.imageRef" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag | toString) }}
{{- end }}
{{- end }}

{{- define "ps-injector.webhookImage" -}}
{{- include "ps-injector.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "ps-injector.agentImage" -}}
{{- include "ps-injector.imageRef" (list .Values.agentImage .) }}
{{- end }}

{{/* The Secret holding the serving certificate, per certificate mode. */}}
{{- define "ps-injector.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret.name is required with certificates.mode=existingSecret" .Values.certificates.existingSecret.name }}
{{- else if eq .Values.certificates.mode "selfManaged" }}
{{- /* Not the -tls Secret of the other modes: switching from helmGenerated, Helm deletes that
one after the upgrade, which must not take the webhook's own Secret with it. */}}
{{- printf "%s-certs" (include "ps-injector.fullname" .) }}
{{- else }}
{{- printf "%s-tls" (include "ps-injector.fullname" .) }}
{{- end }}
{{- end }}

{{- define "ps-injector.serviceName" -}}
{{- include "ps-injector.fullname" . }}
{{- end }}

{{/*
DNS names of the serving certificate: the Service in every form a client may use, plus
certificates.extraDnsNames, as a list.
*/}}
{{- define "ps-injector.dnsNames" -}}
{{- $svc := include "ps-injector.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) }}
{{- range .Values.certificates.extraDnsNames }}
{{- $names = append $names . }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{/*
The cluster configuration document: values.config with agent.image from agentImage unless set.
Left out so that the webhook's built-in defaults apply: top-level sections that are empty or
null, and an empty passwordSafe.url. Nothing deeper is touched (an empty map can mean
something there, e.g. an unrestricted namespace under policy.namespaces).
*/}}
{{- define "ps-injector.config" -}}
{{- $cfg := dict }}
{{- range $k, $v := deepCopy .Values.config }}
{{- if and (kindIs "map" $v) (eq $k "passwordSafe") (eq (toString (get $v "url")) "") }}
{{- $_ := unset $v "url" }}
{{- end }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "map" $v) (empty $v))) }}
{{- $_ := set $cfg $k $v }}
{{- end }}
{{- end }}
{{- $agent := default dict (get $cfg "agent") }}
{{- if not (get $agent "image") }}
{{- $_ := set $agent "image" (include "ps-injector.agentImage" .) }}
{{- end }}
{{- $_ := set $cfg "agent" $agent }}
{{- toYaml $cfg }}
{{- end }}

{{/* The caBundle as base64 of PEM, from webhook.caBundle given as PEM or as base64. */}}
{{- define "ps-injector.userCaBundle" -}}
{{- $ca := .Values.webhook.caBundle | trim }}
{{- if contains "-----BEGIN" $ca }}
{{- $ca | b64enc }}
{{- else }}
{{- $ca | replace "\n" "" }}
{{- end }}
{{- end }}

{{/* Input checks that the schema cannot express. */}}
{{- define "ps-injector.validate" -}}
{{- $mode := .Values.certificates.mode }}
{{- if eq $mode "helm" }}
{{- fail "certificates.mode=helm was renamed helmGenerated. It generates certificates at render time and is not GitOps-stable (Argo CD, Flux, helm template get new certificates on every render). The default is now selfManaged (the webhook manages its own certificates, GitOps-stable); set certificates.mode=helmGenerated to keep Helm-generated certificates, and move certificates.helm to certificates.helmGenerated" }}
{{- end }}
{{- if .Values.certificates.helm }}
{{- fail "certificates.helm was renamed certificates.helmGenerated (with certificates.mode=helmGenerated)" }}
{{- end }}
{{- if and (eq $mode "selfManaged") .Values.deployment.enabled .Values.webhook.caBundle }}
{{- fail "webhook.caBundle must be empty with certificates.mode=selfManaged: the webhook sets the caBundle itself (a rendered one would fight it on every sync)" }}
{{- end }}
{{- if and (eq $mode "existingSecret") (not .Values.webhook.caBundle) }}
{{- fail "certificates.mode=existingSecret needs webhook.caBundle: the CA (PEM or base64 PEM) that signed the certificate in the Secret" }}
{{- end }}
{{- if and .Values.webhook.url (not .Values.webhook.caBundle) (eq $mode "existingSecret") }}
{{- fail "webhook.url needs webhook.caBundle" }}
{{- end }}
{{- if and (not .Values.deployment.enabled) (not .Values.webhook.url) }}
{{- fail "deployment.enabled=false registers an externally run webhook: set webhook.url and webhook.caBundle" }}
{{- end }}
{{- if and (not .Values.deployment.enabled) (not .Values.webhook.caBundle) }}
{{- fail "deployment.enabled=false needs webhook.caBundle (no certificate is generated for a webhook that runs elsewhere)" }}
{{- end }}
{{- if and .Values.webhook.url (not (hasPrefix "https://" .Values.webhook.url)) }}
{{- fail "webhook.url must start with https://" }}
{{- end }}
{{- if and .Values.webhook.url (or (contains "?" .Values.webhook.url) (contains "#" .Values.webhook.url) (contains "@" .Values.webhook.url)) }}
{{- fail "webhook.url must not contain a query, a fragment or user information" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both (set the other to null)" }}
{{- end }}
{{- end }}
