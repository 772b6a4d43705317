{{- define "payflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "payflow.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "payflow.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "payflow.secretName" -}}
{{- if .Values.secrets.existingSecret -}}{{ .Values.secrets.existingSecret }}{{- else -}}{{ include "payflow.fullname" . }}{{- end -}}
{{- end -}}

{{- define "payflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* non-root, no privilege escalation, no capabilities, read-only root filesystem */}}
{{- define "payflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "payflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* settings from the ConfigMap, secrets from the Secret (never in the ConfigMap) */}}
{{- define "payflow.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "payflow.fullname" . }}
env:
  - name: PAYFLOW_HMAC_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ include "payflow.secretName" . }}
        key: {{ .Values.secrets.hmacKeysKey }}
  - name: GOOGLE_APPLICATION_CREDENTIALS
    value: /var/run/secrets/payflow/{{ .Values.secrets.bigqueryCredentialsKey }}
{{- end -}}

{{- define "payflow.secretVolume" -}}
- name: credentials
  secret:
    secretName: {{ include "payflow.secretName" . }}
    optional: true
    items:
      - key: {{ .Values.secrets.bigqueryCredentialsKey }}
        path: {{ .Values.secrets.bigqueryCredentialsKey }}
{{- end -}}
