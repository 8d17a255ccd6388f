{{/* The name of the operator's objects: RELEASE-operator, or fullnameOverride;
  52 characters at most, so that NAME-metrics and NAME-lease stay names. */}}
{{- define "q8s.fullname" -}}
{{- default (printf "%s-operator" .Release.Name) .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of the example's objects: the release's, not the operator's. */}}
{{- define "q8s.exampleLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: q8s-example
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: q8s
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of every object the chart makes. */}}
{{- define "q8s.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: q8s-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: q8s
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* What selects the operator's pods. */}}
{{- define "q8s.selector" -}}
app.kubernetes.io/name: q8s-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* An image reference: repository:tag, the tag defaulting to the appVersion. */}}
{{- define "q8s.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for a container. */}}
{{- define "q8s.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The rules the operator's roles grant, generated from its declaration. */}}
{{- define "q8s.rules" -}}
{{- $rules := .Files.Get "files/rbac.yaml" | fromYaml -}}
{{- if not $rules.clusterRules -}}
{{- fail "files/rbac.yaml has no clusterRules: regenerate it with q8s-operator rbac" -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
