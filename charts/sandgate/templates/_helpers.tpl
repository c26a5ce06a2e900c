{{/* Labels every object carries: deploy/'s two, and Helm's. */}}
{{- define "sandgate.labels" -}}
app.kubernetes.io/name: sandgate
app.kubernetes.io/part-of: sandgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The webhook replicas, as the Service, the PDB and anti-affinity select them. */}}
{{- define "sandgate.selector" -}}
app.kubernetes.io/name: sandgate
app.kubernetes.io/component: webhook
{{- end }}

{{/* Namespaces never sent to sandgate, as a YAML flow list. */}}
{{- define "sandgate.excluded" -}}
{{- $ns := concat (list "kube-system" .Release.Namespace) .Values.excludeNamespaces | uniq -}}
[{{- range $i, $n := $ns }}{{ if $i }}, {{ end }}{{ $n | quote }}{{ end -}}]
{{- end }}

{{/* caBundle of each webhook entry: only the existingSecret mode sets one here. */}}
{{- define "sandgate.caBundle" -}}
{{- if eq .Values.tls.mode "existingSecret" -}}
caBundle: {{ required "tls.existingSecret.caBundle is required with tls.mode=existingSecret" .Values.tls.existingSecret.caBundle }}
{{- else if eq .Values.tls.mode "self" -}}
# caBundle: written by sandgate (tls.mode=self) and kept up to date through rotations.
{{- else -}}
# caBundle: injected by cert-manager's cainjector (annotation above).
{{- end -}}
{{- end }}

{{/* The annotations of the two webhook configurations. */}}
{{- define "sandgate.webhookAnnotations" -}}
{{- if eq .Values.tls.mode "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ .Values.tls.secretName }}
{{- end }}
{{- end }}

{{- define "sandgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "sandgate.checkMode" -}}
{{- if not (has .Values.tls.mode (list "self" "cert-manager" "existingSecret")) -}}
{{- fail (printf "tls.mode must be self, cert-manager or existingSecret, not %q" .Values.tls.mode) -}}
{{- end -}}
{{- end }}
