{{- define "tidemark.fullname" -}}{{ .Release.Name }}-tidemark{{- end -}}
{{- define "tidemark.labels" -}}
app.kubernetes.io/name: tidemark
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
