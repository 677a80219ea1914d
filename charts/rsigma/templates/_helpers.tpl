{{/* Chart name, truncated to 63 characters. */}}
{{- define "rsigma.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name and chart name, unless overridden. */}}
{{- define "rsigma.fullname" -}}
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

{{- define "rsigma.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "rsigma.labels" -}}
helm.sh/chart: {{ include "rsigma.chart" . }}
{{ include "rsigma.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rsigma
{{- end }}

{{/* Labels selecting the operator pods. */}}
{{- define "rsigma.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rsigma.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "rsigma.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rsigma.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The generated RBAC rules of files/rbac/NAME-rules.yaml (crdgen). */}}
{{- define "rsigma.rules" -}}
{{- $path := printf "files/rbac/%s-rules.yaml" .name }}
{{- $rules := .ctx.Files.Get $path }}
{{- if not $rules }}
{{- fail (printf "%s is missing: run `cargo run -p rsigma-crds --bin crdgen`" $path) }}
{{- end }}
{{- $rules }}
{{- end }}
