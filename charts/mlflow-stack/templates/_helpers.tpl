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

{{/*
Labels that select the MLflow server's pods (the subchart's selector labels).
*/}}
{{- define "mlflow-stack.mlflowSelectorLabels" -}}
app.kubernetes.io/name: {{ default "mlflow" .Values.mlflow.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select the PostgreSQL instances of the Cluster (set by CloudNativePG).
*/}}
{{- define "mlflow-stack.postgresSelectorLabels" -}}
cnpg.io/cluster: {{ .Values.postgres.name }}
cnpg.io/podRole: instance
{{- end }}

{{/*
A selector of CloudNativePG's Job pods for the Cluster (initdb, join, snapshot-recovery,
major-upgrade...): CloudNativePG labels them with the Cluster and `cnpg.io/jobRole`, never with
the instances' `cnpg.io/podRole`.
*/}}
{{- define "mlflow-stack.postgresJobSelector" -}}
matchLabels:
  cnpg.io/cluster: {{ .Values.postgres.name }}
matchExpressions:
  - key: cnpg.io/jobRole
    operator: Exists
{{- end }}

{{/*
An egress rule to the Kubernetes API server (networkPolicy.apiServer), for CloudNativePG's
instance manager (in the instances and in the Cluster's Job pods) and the pre-upgrade backup Job.
*/}}
{{- define "mlflow-stack.apiServerEgress" -}}
{{- $api := .Values.networkPolicy.apiServer -}}
- ports:
    {{- range $api.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with $api.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
An egress rule to the cluster DNS.
*/}}
{{- define "mlflow-stack.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}

{{/*
Labels of the helm test pod, which the NetworkPolicies let through to MLflow.
*/}}
{{- define "mlflow-stack.smokeTestSelectorLabels" -}}
app.kubernetes.io/component: smoke-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The Prometheus pods that scrape the metrics (a NetworkPolicy peer).
*/}}
{{- define "mlflow-stack.monitoringPeer" -}}
{{- $m := .Values.networkPolicy.monitoring -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $m.namespace }}
  {{- with $m.podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}

{{/*
The client namespaces' label selector (networkPolicy.clients.namespaceSelector.matchLabels) as
YAML, without the labels an overlay removed by setting them to null.
*/}}
{{- define "mlflow-stack.clientLabels" -}}
{{- $labels := dict -}}
{{- range $k, $v := .Values.networkPolicy.clients.namespaceSelector.matchLabels -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $_ := set $labels $k $v -}}
{{- end -}}
{{- end -}}
{{- if $labels -}}
{{- toYaml $labels -}}
{{- end -}}
{{- end }}

{{/*
The MLflow server's image as the mlflow subchart renders it: mlflow.image.repository (the
subchart's default, burakince/mlflow) and mlflow.image.tag, by default this chart's appVersion,
which is the subchart's (tests/test_versions.py). Hook Jobs run it: the version being installed.
*/}}
{{- define "mlflow-stack.serverImage" -}}
{{- $image := .Values.mlflow.image | default dict -}}
{{- printf "%s:%s" ($image.repository | default "burakince/mlflow") ($image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/*
Labels of the migration hook Job's pods (zero-downtime mode), which its NetworkPolicies select.
Not the server's selector labels: the Service would send requests to it.
*/}}
{{- define "mlflow-stack.migrateSelectorLabels" -}}
app.kubernetes.io/component: migrate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the gc CronJob's pods, which the NetworkPolicies let through to PostgreSQL and MLflow.
*/}}
{{- define "mlflow-stack.gcSelectorLabels" -}}
app.kubernetes.io/component: gc
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
A container securityContext that meets the "restricted" Pod Security Standard, as the server's.
*/}}
{{- define "mlflow-stack.restrictedContainer" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 1001
runAsGroup: 1001
{{- end }}
