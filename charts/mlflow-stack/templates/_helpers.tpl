{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "mlflow-stack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of this chart's own templates.
*/}}
{{- define "mlflow-stack.labels" -}}
helm.sh/chart: {{ include "mlflow-stack.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: mlflow
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The name of the mlflow subchart's Service, computed the way the subchart computes its fullname.
*/}}
{{- define "mlflow-stack.mlflowFullname" -}}
{{- $sub := .Values.mlflow -}}
{{- if $sub.fullnameOverride -}}
{{- $sub.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "mlflow" $sub.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The read-write Service of the CloudNativePG Cluster.
*/}}
{{- define "mlflow-stack.postgresHost" -}}
{{- printf "%s-rw" .Values.postgres.name -}}
{{- end }}
