{{/* Names, labels and shared snippets of the C4 chart. */}}

{{- define "c4.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "c4.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: call with (list $ "agent"). */}}
{{- define "c4.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "c4.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "c4.collectorAddress" -}}
{{- if .Values.collector.address -}}
{{ .Values.collector.address }}
{{- else -}}
{{ include "c4.fullname" . }}-collector.{{ .Release.Namespace }}.svc:{{ .Values.collector.port }}
{{- end -}}
{{- end -}}

{{/* The collector refuses plaintext or token-less calls off loopback; so does the chart. */}}
{{- define "c4.checkSecurity" -}}
{{- if not .Values.insecure -}}
{{- if not .Values.tls.secretName -}}
{{- fail "tls.secretName is empty: give the collector a TLS certificate Secret (README \"Security\"), or set insecure=true on a trusted test cluster" -}}
{{- end -}}
{{- if not .Values.tokens.secretName -}}
{{- fail "tokens.secretName is empty: give the collector a tokens Secret (mutual TLS alone does not do: the DaemonSet shares one client certificate, and a certificate speaks for the one node it names), or set insecure=true on a trusted test cluster" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* [section] keys from a map, values as TOML (JSON scalars and arrays are valid TOML). */}}
{{- define "c4.tomlKeys" -}}
{{- range $k, $v := . }}
{{ $k }} = {{ $v | toJson }}
{{- end }}
{{- end -}}

{{/* Client security keys of [agent] / [query]: call with (list $ "agent.token"). */}}
{{- define "c4.clientSecurity" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.tls.secretName }}
tls_ca = "/etc/c4/tls/ca.crt"
tls_server_name = {{ $root.Values.tls.serverName | default (include "c4.collectorAddress" $root | splitList ":" | first) | quote }}
{{- end }}
{{- if $root.Values.tls.clientSecretName }}
tls_cert = "/etc/c4/client-tls/tls.crt"
tls_key = "/etc/c4/client-tls/tls.key"
{{- end }}
{{- if $root.Values.tokens.secretName }}
token_file = {{ printf "/etc/c4/tokens/%s" (index . 1) | quote }}
{{- end }}
insecure = {{ $root.Values.insecure }}
{{- end -}}

{{/* Pod security for the non-root components. */}}
{{- define "c4.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "c4.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}
