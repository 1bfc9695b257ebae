{{/* Chart name, overridable. */}}
{{- define "signet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, suffixed with the chart name unless it
already contains it. Also the prefix of every cluster-scoped object, so releases never collide. */}}
{{- define "signet.fullname" -}}
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

{{- define "signet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "signet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "signet.labels" -}}
helm.sh/chart: {{ include "signet.chart" . }}
{{ include "signet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "signet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "signet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Consistency checks the JSON schema cannot express. */}}
{{- define "signet.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) (not .Values.sharding.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled=true or sharding.enabled=true: standalone replicas would all act on every Certificate" }}
{{- end }}
{{- if and .Values.peering.enabled .Values.sharding.enabled }}
{{- fail "peering.enabled and sharding.enabled exclude each other: pick one" }}
{{- end }}
{{- if and .Values.sharding.enabled .Values.audit.existingClaim (gt (int .Values.replicaCount) 1) }}
{{- fail "sharding with audit.existingClaim: replicas would append to one hash-chained file; use the log or one emptyDir per pod" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to null)" }}
{{- end }}
{{- if and .Values.audit.existingClaim (not .Values.audit.file) }}
{{- fail "audit.existingClaim needs audit.file" }}
{{- end }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "signet.subject" -}}
- kind: ServiceAccount
  name: {{ include "signet.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Rules for the namespaced resources, used cluster-wide (ClusterRole) when
watchNamespaces is empty and per watched namespace (Role) otherwise. */}}
{{- define "signet.namespacedRules" -}}
- apiGroups: [signet.dev]
  resources: [certificates, issuers]
  verbs: [get, list, watch]
- apiGroups: [signet.dev]
  resources: [certificates/status, issuers/status]
  verbs: [get, patch, update]
# Secrets holding issued keys and certificates. No delete: they are garbage-collected through
# their ownerReference to the Certificate.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, patch]
# Trust bundles published per namespace; written by name, never listed.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update, patch]
# PodCertificateRequests of Signet's signers, answered through their status.
- apiGroups: [certificates.k8s.io]
  resources: [podcertificaterequests]
  verbs: [get, list, watch]
- apiGroups: [certificates.k8s.io]
  resources: [podcertificaterequests/status]
  verbs: [update, patch]
# cert-manager CertificateRequests naming Signet's issuers (Signet as an external issuer),
# answered with one PUT of their status. Granted whether or not cert-manager is installed:
# the watch starts when its CRDs appear.
- apiGroups: [cert-manager.io]
  resources: [certificaterequests]
  verbs: [get, list, watch]
- apiGroups: [cert-manager.io]
  resources: [certificaterequests/status]
  verbs: [update]
{{ include "signet.eventRules" . }}
{{- end }}

{{- define "signet.eventRules" -}}
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{- define "signet.peeringVerbs" -}}
[get, list, watch, patch, create]
{{- end }}
