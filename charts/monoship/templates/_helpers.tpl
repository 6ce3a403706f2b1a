{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "monoship.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (the DNS label limit).
If the release name contains the chart name it is used as is.
*/}}
{{- define "monoship.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "monoship.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "monoship.labels" -}}
helm.sh/chart: {{ include "monoship.chart" . }}
{{ include "monoship.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: monoship
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "monoship.selectorLabels" -}}
app.kubernetes.io/name: {{ include "monoship.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount.
*/}}
{{- define "monoship.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "monoship.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Controller image reference.
*/}}
{{- define "monoship.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The controller's permissions, and nothing more. Shared by the ClusterRole
(all namespaces) and the Role (watchNamespace).
*/}}
{{- define "monoship.rules" -}}
- apiGroups: ["monoship.dev"]
  resources: ["servicebuilds", "monorepos"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["monoship.dev"]
  resources: ["servicebuilds/status", "monorepos/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Build pods: why one cannot start (an image pull) while a build Job has no ready pod, and
# the digest a succeeded build reported in its termination message.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "patch"]
# monoship's own Events on ServiceBuilds.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The Job controller's FailedCreate Events: why a build Job has no pod.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
{{- end }}
