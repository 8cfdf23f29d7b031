{{/* The prefix of every resource name: the release name, or <release>-fleetport. */}}
{{- define "fleetport.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name; `_` is not allowed in names. Call with (list $ "name"). */}}
{{- define "fleetport.name" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "fleetport.fullname" $root) (index . 1 | replace "_" "-") -}}
{{- end -}}

{{/* Labels that select a component's pods. Call with (list $ "component" "tier"). */}}
{{- define "fleetport.selector" -}}
app.kubernetes.io/name: fleetport
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 | replace "_" "-" }}
{{- end -}}

{{/* Every label of a component's resources and pods. Call with (list $ "component" "tier"). */}}
{{- define "fleetport.labels" -}}
{{ include "fleetport.selector" . }}
fleetport.io/tier: {{ index . 2 }}
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
helm.sh/chart: {{ (index . 0).Chart.Name }}-{{ (index . 0).Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fleetport.image" -}}
{{- if not .Values.image.repository -}}
{{- fail "image.repository is empty: build deploy/Dockerfile, push it, and set image.repository (see the README)" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "fleetport.keysSecret" -}}
{{- .Values.keys.existingSecret | default (include "fleetport.name" (list . "keys")) -}}
{{- end -}}

{{- define "fleetport.mongoSecret" -}}
{{- if .Values.mongodb.bundled.enabled -}}
{{- include "fleetport.name" (list . "mongodb") -}}
{{- else -}}
{{- required "mongodb.external.existingSecret is needed without the bundled MongoDB" .Values.mongodb.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "fleetport.mongoKey" -}}
{{- if .Values.mongodb.bundled.enabled -}}url{{- else -}}{{ .Values.mongodb.external.key }}{{- end -}}
{{- end -}}

{{/* An internal address of a service: http://<release>-<name>:8080. */}}
{{- define "fleetport.addr" -}}
{{- printf "http://%s:8080" (include "fleetport.name" .) -}}
{{- end -}}

{{- define "fleetport.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "fleetport.name" (list . "nats")) -}}
{{- else -}}
{{- .Values.nats.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* The pod security context of Fleetport's own image (user fleetport, uid 10001). */}}
{{- define "fleetport.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A container that writes nothing outside its volumes and holds no privilege. */}}
{{- define "fleetport.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Every service container's environment: listen address, database, secrets, peers. Call
     with (list $ "name" $svc). */}}
{{- define "fleetport.serviceEnv" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index . 2 -}}
{{- $p := $svc.envPrefix -}}
- name: {{ $p }}LISTEN_HOST
  value: "0.0.0.0"
- name: {{ $p }}LISTEN_PORT
  value: "8080"
- name: {{ $p }}MONGO_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetport.mongoSecret" $root }}
      key: {{ include "fleetport.mongoKey" $root }}
{{- range $setting, $key := $svc.secretEnv }}
- name: {{ $p }}{{ $setting }}
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetport.keysSecret" $root }}
      key: {{ $key }}
{{- end }}
{{- range $setting, $file := $svc.keyFiles }}
- name: {{ $p }}{{ $setting }}
  value: /var/lib/fleetport/keys/{{ $file.path }}
{{- end }}
{{- range $peer := $svc.peers }}
{{- if hasKey $root.Values.services $peer }}
- name: {{ $p }}{{ $peer | upper }}_ADDR
  value: {{ include "fleetport.addr" (list $root $peer) }}
{{- end }}
{{- end }}
{{- range $setting, $value := $svc.env }}
- name: {{ $p }}{{ $setting }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The keys Secret's files a service needs, as a volume. Call with (list $ $svc). */}}
{{- define "fleetport.keyVolume" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 1 -}}
- name: keys
  secret:
    secretName: {{ include "fleetport.keysSecret" $root }}
    defaultMode: 0440
    items:
{{- range $setting, $file := $svc.keyFiles }}
      - key: {{ $file.key }}
        path: {{ $file.path }}
{{- end }}
{{- end -}}

{{/* The settings of artifact storage. Call with (list $ $svc). */}}
{{- define "fleetport.storageEnv" -}}
{{- $root := index . 0 -}}
{{- $p := (index . 1).envPrefix -}}
{{- $s3 := $root.Values.storage.s3 -}}
# Links are signed for the public address, whatever proxy a request came through.
- name: {{ $p }}PRESIGN_URL_BASE
  value: {{ printf "%s://%s" (ternary "https" "http" $root.Values.tls.enabled) $root.Values.host | quote }}
{{- if eq $root.Values.storage.type "volume" }}
- name: {{ $p }}STORAGE_PATH
  value: /var/lib/fleetport/artifacts
{{- else if eq $root.Values.storage.type "s3" }}
- name: {{ $p }}STORAGE_DEFAULT
  value: aws
- name: {{ $p }}AWS_URI
  value: {{ required "storage.s3.uri is needed with storage.type=s3" $s3.uri | quote }}
- name: {{ $p }}AWS_EXTERNAL_URI
  value: {{ $s3.externalUri | default $s3.uri | quote }}
- name: {{ $p }}AWS_BUCKET
  value: {{ $s3.bucket | quote }}
- name: {{ $p }}AWS_REGION
  value: {{ $s3.region | quote }}
- name: {{ $p }}AWS_FORCE_PATH_STYLE
  value: {{ $s3.forcePathStyle | quote }}
- name: {{ $p }}AWS_CREATE_BUCKET
  value: {{ $s3.createBucket | quote }}
- name: {{ $p }}AWS_AUTH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "storage.s3.existingSecret is needed with storage.type=s3" $s3.existingSecret }}
      key: access-key
- name: {{ $p }}AWS_AUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: secret-key
{{- else }}
{{- fail "storage.type must be volume or s3" }}
{{- end }}
{{- end -}}

{{- define "fleetport.tlsSecret" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- include "fleetport.name" (list . "tls") -}}
{{- else -}}
{{- fail "tls.enabled needs tls.existingSecret or tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{/* The bundled MongoDB's connection string: its pod's stable name, the replica set. */}}
{{- define "fleetport.mongoHost" -}}
{{- $name := include "fleetport.name" (list . "mongodb") -}}
{{- printf "%s-0.%s.%s.svc.cluster.local:27017" $name $name .Release.Namespace -}}
{{- end -}}

{{- define "fleetport.mongoUrl" -}}
{{- printf "mongodb://%s/?replicaSet=rs0" (include "fleetport.mongoHost" .) -}}
{{- end -}}

{{/* A pod's annotations for Prometheus' Kubernetes discovery: its metrics on this port. */}}
{{- define "fleetport.scrape" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}
