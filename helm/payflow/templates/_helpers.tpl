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

{{- define "payflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.name | default (include "payflow.fullname" .) }}{{- else -}}{{ .Values.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}

{{- define "payflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "payflow.duckdb" -}}
{{- if hasPrefix "duckdb://" .Values.warehouse.url }}true{{ end -}}
{{- end -}}

{{/* The key in the Secret holding a service-account JSON key for BigQuery; empty: no key
file, credentials come from the pod's identity (Workload Identity, IRSA, node metadata). */}}
{{- define "payflow.gcpKey" -}}
{{- if .Values.secrets.bigqueryCredentialsKey -}}{{ .Values.secrets.bigqueryCredentialsKey }}
{{- else if and (not .Values.secrets.existingSecret) .Values.secrets.create.bigqueryCredentials -}}bigquery-credentials.json
{{- end -}}
{{- end -}}

{{- define "payflow.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "payflow.kafkaSasl" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{/* a setting's value as a string: numbers from values.yaml arrive as float64, and
1000000 would otherwise be written 1e+06 */}}
{{- define "payflow.settingValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* Values the schema cannot judge alone; each refusal names the value to change. */}}
{{- define "payflow.validate" -}}
{{- $v := .Values -}}
{{- $reserved := dict
    "PAYFLOW_KAFKA_BOOTSTRAP" "from kafka.bootstrap"
    "PAYFLOW_WAREHOUSE" "from warehouse.url"
    "PAYFLOW_BIGQUERY_ENDPOINT" "from warehouse.bigqueryEndpoint"
    "PAYFLOW_PARTITIONS" "from partitions"
    "PAYFLOW_WEB_PORT" "from webPort"
    "PAYFLOW_PRODUCTION" "always true: the chart runs payflow in production mode"
    "PAYFLOW_DATA_DIR" "the state volume, /var/lib/payflow"
    "PAYFLOW_SQL_DIR" "the image's DDL, /app/sql"
    "PAYFLOW_HMAC_KEYS" "from secrets.existingSecret or secrets.create.hmacKeys, never a ConfigMap"
    "PAYFLOW_HMAC_KEY_FILE" "from secrets.existingSecret or secrets.create.hmacKeys, never a ConfigMap"
    "PAYFLOW_HMAC_KEYS_FILE" "the key ring's file, mounted from secrets.existingSecret or secrets.create.hmacKeys"
    "PAYFLOW_KAFKA_SECURITY_PROTOCOL" "from kafka.securityProtocol"
    "PAYFLOW_KAFKA_SASL_MECHANISM" "from kafka.sasl.mechanism"
    "PAYFLOW_KAFKA_SASL_USERNAME" "from kafka.sasl.username"
    "PAYFLOW_KAFKA_SASL_PASSWORD" "a file from kafka.sasl.passwordSecret, never a ConfigMap"
    "PAYFLOW_KAFKA_SASL_PASSWORD_FILE" "from kafka.sasl.passwordSecret"
    "PAYFLOW_KAFKA_SSL_CAFILE" "from kafka.tls.existingSecret and kafka.tls.caKey"
    "PAYFLOW_KAFKA_SSL_CERTFILE" "from kafka.tls.existingSecret and kafka.tls.certKey"
    "PAYFLOW_KAFKA_SSL_KEYFILE" "from kafka.tls.existingSecret and kafka.tls.keyKey"
    "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME" "from kafka.tls.checkHostname"
    "PAYFLOW_KAFKA_REPLICATION_FACTOR" "from kafka.replicationFactor"
    "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS" "from kafka.minInsyncReplicas" -}}
{{- range $name, $_ := $v.settings }}
{{- if hasKey $reserved $name }}
{{- fail (printf "settings.%s is set by the chart itself (%s): remove it from settings" $name (get $reserved $name)) }}
{{- end }}
{{- end }}
{{- if gt (int $v.replicas) (int $v.partitions) }}
{{- fail (printf "replicas (%d) > partitions (%d): the extra workers would sit idle" (int $v.replicas) (int $v.partitions)) }}
{{- end }}
{{- if include "payflow.duckdb" . }}
{{- if gt (int $v.replicas) 1 }}
{{- fail (printf "replicas=%d with a DuckDB warehouse: DuckDB is a single file on one worker's volume with one writer; use replicas=1 or a bigquery:// warehouse" (int $v.replicas)) }}
{{- end }}
{{- if not (hasPrefix "duckdb:////var/lib/payflow/" $v.warehouse.url) }}
{{- fail (printf "warehouse.url %s: a DuckDB file must live on the state volume, duckdb:////var/lib/payflow/NAME.duckdb (the root filesystem is read-only)" $v.warehouse.url) }}
{{- end }}
{{- if $v.auditCronJob.enabled }}
{{- fail "auditCronJob.enabled=true with a DuckDB warehouse: the DuckDB file is on worker-0's volume, which the audit Job cannot read (it would scan an empty file). Set auditCronJob.enabled=false and run the audit inside the worker: kubectl exec <release>-payflow-0 -- payflow audit pci" }}
{{- end }}
{{- end }}
{{- if and $v.secrets.bigqueryCredentialsKey (not $v.secrets.existingSecret) (not $v.secrets.create.bigqueryCredentials) }}
{{- fail (printf "secrets.bigqueryCredentialsKey=%s but the chart's Secret holds no such key: set secrets.create.bigqueryCredentials or secrets.existingSecret, or leave the key empty for Workload Identity" $v.secrets.bigqueryCredentialsKey) }}
{{- end }}
{{- $k := $v.kafka }}
{{- if include "payflow.kafkaSasl" . }}
{{- if not (and $k.sasl.mechanism $k.sasl.username $k.sasl.passwordSecret.name) }}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.passwordSecret.name (an existing Secret holding the password)" $k.securityProtocol) }}
{{- end }}
{{- else if or $k.sasl.mechanism $k.sasl.passwordSecret.name }}
{{- fail (printf "kafka.sasl is set but kafka.securityProtocol=%s uses no SASL: use SASL_SSL (or SASL_PLAINTEXT)" $k.securityProtocol) }}
{{- end }}
{{- if include "payflow.kafkaTls" . }}
{{- if ne (empty $k.tls.certKey) (empty $k.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (the client certificate and its key, for mTLS)" }}
{{- end }}
{{- if and $k.tls.certKey (not $k.tls.existingSecret) }}
{{- fail "kafka.tls.certKey/keyKey name keys of kafka.tls.existingSecret, which is empty" }}
{{- end }}
{{- if and $k.tls.existingSecret (not (or $k.tls.caKey $k.tls.certKey)) }}
{{- fail "kafka.tls.existingSecret is set but names no file: set kafka.tls.caKey and/or kafka.tls.certKey with kafka.tls.keyKey" }}
{{- end }}
{{- else if $k.tls.existingSecret }}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol=%s uses no TLS: use SSL or SASL_SSL" $k.securityProtocol) }}
{{- end }}
{{- if and $k.minInsyncReplicas $k.replicationFactor (gt (int $k.replicationFactor) 0) (gt (int $k.minInsyncReplicas) (int $k.replicationFactor)) }}
{{- fail (printf "kafka.minInsyncReplicas (%d) > kafka.replicationFactor (%d): no write could ever be acknowledged" (int $k.minInsyncReplicas) (int $k.replicationFactor)) }}
{{- end }}
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

{{/* the pod-level identity: one ServiceAccount (Workload Identity / IRSA), no API token */}}
{{- define "payflow.podIdentity" -}}
serviceAccountName: {{ include "payflow.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* rolls the pods when the ConfigMap or the chart's Secret changes, plus podAnnotations */}}
{{- define "payflow.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* settings from the ConfigMap, secrets from Secrets (never in the ConfigMap).
     .hmac: whether the container gets the HMAC key ring; .gcp: the BigQuery key file, if any */}}
{{- define "payflow.env" -}}
{{- $ := .root -}}
envFrom:
  - configMapRef:
      name: {{ include "payflow.fullname" $ }}
{{- if or .hmac (and .gcp (include "payflow.gcpKey" $)) $.Values.extraEnv }}
env:
  {{- if .hmac }}
  # a file, not the key ring itself: no process environment holds the keys
  - name: PAYFLOW_HMAC_KEYS_FILE
    value: /var/run/secrets/payflow/hmac/keys
  {{- end }}
  {{- with and .gcp (include "payflow.gcpKey" $) }}
  - name: GOOGLE_APPLICATION_CREDENTIALS
    value: /var/run/secrets/payflow/gcp/{{ . }}
  {{- end }}
  {{- with $.Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* .gcp: whether the BigQuery key file (if any) is mounted; .hmac: the HMAC key ring's file;
     Kafka's files always are */}}
{{- define "payflow.secretVolumeMounts" -}}
{{- $gcp := .gcp }}
{{- if .hmac }}
- name: hmac-keys
  mountPath: /var/run/secrets/payflow/hmac
  readOnly: true
{{- end }}
{{- with .root }}
{{- if and $gcp (include "payflow.gcpKey" .) }}
- name: gcp-credentials
  mountPath: /var/run/secrets/payflow/gcp
  readOnly: true
{{- end }}
{{- if include "payflow.kafkaSasl" . }}
- name: kafka-sasl
  mountPath: /var/run/secrets/payflow/kafka-sasl
  readOnly: true
{{- end }}
{{- if and (include "payflow.kafkaTls" .) .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /var/run/secrets/payflow/kafka-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* files readable by the pod's group only (fsGroup 10001): 0440 */}}
{{- define "payflow.secretVolumes" -}}
{{- $gcp := .gcp }}
{{- $r := .root }}
{{- if .hmac }}
- name: hmac-keys
  secret:
    secretName: {{ include "payflow.secretName" $r }}
    defaultMode: 0440
    items:
      - key: {{ $r.Values.secrets.hmacKeysKey }}
        path: keys
{{- end }}
{{- with .root }}
{{- with and $gcp (include "payflow.gcpKey" .) }}
- name: gcp-credentials
  secret:
    secretName: {{ include "payflow.secretName" $r }}
    defaultMode: 0440
    items:
      - key: {{ . }}
        path: {{ . }}
{{- end }}
{{- $k := .Values.kafka }}
{{- if include "payflow.kafkaSasl" . }}
- name: kafka-sasl
  secret:
    secretName: {{ $k.sasl.passwordSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.passwordSecret.key }}
        path: password
{{- end }}
{{- if and (include "payflow.kafkaTls" .) $k.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $k.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- if $k.tls.caKey }}
      - key: {{ $k.tls.caKey }}
        path: ca.crt
      {{- end }}
      {{- if $k.tls.certKey }}
      - key: {{ $k.tls.certKey }}
        path: tls.crt
      - key: {{ $k.tls.keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "payflow.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
