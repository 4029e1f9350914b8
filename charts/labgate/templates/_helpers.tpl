{{- define "labgate.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
{{- define "labgate.registryConfigPath" -}}
{{- if eq .Values.registry.kind "zot" -}}/etc/zot/config.json{{- else -}}/etc/distribution/config.yml{{- end -}}
{{- end }}
