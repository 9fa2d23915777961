{{- define "tidemark.fullname" -}}{{ .Release.Name }}-tidemark{{- end -}}
{{- define "tidemark.labels" -}}
app.kubernetes.io/name: tidemark
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The Secret holding the token file: the one given, or the chart's own. */ -}}
{{- define "tidemark.tokenSecret" -}}
{{- .Values.tokenSecret | default (printf "%s-tokens" (include "tidemark.fullname" .)) -}}
{{- end -}}
