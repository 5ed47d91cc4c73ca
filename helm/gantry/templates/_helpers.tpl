{{/* Names and labels. */}}
{{- define "gantry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gantry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gantry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: proxy (also the embedded pod), store, etcd. */}}
{{- define "gantry.selector" -}}
app.kubernetes.io/name: {{ include "gantry.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gantry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "gantry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gantry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gantry.clustered" -}}
{{- if eq .Values.shape "clustered" -}}true{{- end -}}
{{- end -}}

{{- define "gantry.tlsSecret" -}}
{{- default (printf "%s-tls" (include "gantry.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* The store nodes' addresses (headless Service DNS names), clustered shape. */}}
{{- define "gantry.storeEndpoints" -}}
{{- $full := include "gantry.fullname" . -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.store.replicas) -}}
{{- $eps = append $eps (printf "%s-store-%d.%s-store-headless.%s.svc:%d" $full $i $full $.Release.Namespace (int $.Values.store.port)) -}}
{{- end -}}
{{- toJson $eps -}}
{{- end -}}

{{/*
etcd's client endpoints as HOST:PORT (JSON list): etcd.endpoints (an
http:// prefix dropped) or the chart's etcd members; [] without etcd.
*/}}
{{- define "gantry.etcdEndpoints" -}}
{{- $full := include "gantry.fullname" . -}}
{{- $eps := list -}}
{{- if .Values.etcd.endpoints -}}
{{- range .Values.etcd.endpoints -}}
{{- $eps = append $eps (trimPrefix "http://" . | trimSuffix "/") -}}
{{- end -}}
{{- else if .Values.etcd.enabled -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s-etcd-%d.%s-etcd.%s.svc:2379" $full $i $full $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- toJson $eps -}}
{{- end -}}

{{/*
"true" when the clustered shape's store tier is a store cluster on etcd
(store nodes with a cluster section, proxies with store.mode cluster);
without etcd it is one store node the proxies use in remote mode.
*/}}
{{- define "gantry.storeCluster" -}}
{{- if and (include "gantry.clustered" .) (include "gantry.etcdEndpoints" . | fromJsonArray) -}}true{{- end -}}
{{- end -}}

{{/*
The proxy's gantry.yaml: .Values.config with the keys the chart owns
(listen addresses, store mode, data dir, store endpoints) set over it.
*/}}
{{- define "gantry.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- $server := dict -}}
{{- if hasKey $c "server" }}{{ $server = $c.server }}{{ end -}}
{{- $_ := set $server "grpc_listen" "0.0.0.0:8081" -}}
{{- $_ := set $server "http_listen" "0.0.0.0:5557" -}}
{{- $_ := set $c "server" $server -}}
{{- $amqp := dict -}}
{{- if hasKey $c "amqp" }}{{ $amqp = $c.amqp }}{{ end -}}
{{- $_ := set $amqp "listen" (ternary "0.0.0.0:5672" "off" .Values.amqp.enabled) -}}
{{- if and .Values.tls.enabled .Values.tls.amqps }}
{{- $_ := set $amqp "tls_listen" "0.0.0.0:5671" -}}
{{- end -}}
{{- $_ := set $c "amqp" $amqp -}}
{{- $store := dict -}}
{{- if hasKey $c "store" }}{{ $store = $c.store }}{{ end -}}
{{- if include "gantry.storeCluster" . -}}
{{- $_ := set $store "mode" "cluster" -}}
{{- $_ := set $store "etcd" (include "gantry.etcdEndpoints" . | fromJsonArray) -}}
{{- $_ := set $store "cluster_name" .Values.store.cluster.name -}}
{{- $_ := unset $store "endpoints" -}}
{{- $_ := unset $store "data_dir" -}}
{{- else if include "gantry.clustered" . -}}
{{- if gt (int .Values.store.replicas) 1 -}}
{{- fail "store.replicas > 1 needs etcd (etcd.enabled or etcd.endpoints): the store nodes form a cluster through it" -}}
{{- end -}}
{{- $_ := set $store "mode" "remote" -}}
{{- $_ := set $store "endpoints" (include "gantry.storeEndpoints" . | fromJsonArray) -}}
{{- $_ := unset $store "data_dir" -}}
{{- else -}}
{{- $_ := set $store "mode" "local" -}}
{{- $_ := set $store "data_dir" "/data" -}}
{{- end -}}
{{- $_ := set $c "store" $store -}}
{{- if .Values.tls.enabled -}}
{{- $tls := dict -}}
{{- if hasKey $c "tls" }}{{ $tls = $c.tls }}{{ end -}}
{{- $_ := set $tls "mode" .Values.tls.grpcMode -}}
{{- $_ := set $tls "client_auth" .Values.tls.clientAuth -}}
{{- $_ := set $tls "cert_file" "/etc/gantry/tls/tls.crt" -}}
{{- $_ := set $tls "key_file" "/etc/gantry/tls/tls.key" -}}
{{- if or .Values.tls.ca (ne .Values.tls.clientAuth "none") -}}
{{- $_ := set $tls "ca_file" "/etc/gantry/tls/ca.crt" -}}
{{- end -}}
{{- $_ := set $c "tls" $tls -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/*
gantry-store's config: .Values.store.config, and in a store cluster its
cluster section (etcd, name, lease and replica-set settings; node_id and
advertise are per pod, given as flags).
*/}}
{{- define "gantry.storeConfig" -}}
{{- $c := deepCopy (.Values.store.config | default dict) -}}
{{- if include "gantry.storeCluster" . -}}
{{- $v := .Values.store.cluster -}}
{{- $cl := dict -}}
{{- if hasKey $c "cluster" }}{{ $cl = $c.cluster }}{{ end -}}
{{- $_ := set $cl "etcd" (include "gantry.etcdEndpoints" . | fromJsonArray) -}}
{{- $_ := set $cl "name" $v.name -}}
{{- $_ := set $cl "lease_ttl_s" (int $v.leaseTtlS) -}}
{{- $r := int (default .Values.store.replicas $v.replicas) -}}
{{- $_ := set $cl "replicas" $r -}}
{{- if $v.minInsync }}{{ $_ := set $cl "min_insync" (int $v.minInsync) }}
{{- else if lt $r 2 }}{{ $_ := set $cl "min_insync" 1 }}{{ end -}}
{{- if $v.replicaLagMs }}{{ $_ := set $cl "replica_lag_ms" (int $v.replicaLagMs) }}{{ end -}}
{{- $_ := set $c "cluster" $cl -}}
{{- end -}}
{{- if $c -}}
{{- toYaml $c -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* Seconds from the preStop hook's start until SIGKILL. */}}
{{- define "gantry.grace" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $ms := 4000 -}}
{{- if and .Values.config.server (hasKey .Values.config.server "shutdown_timeout_ms") -}}
{{- $ms = .Values.config.server.shutdown_timeout_ms -}}
{{- end -}}
{{- add (int .Values.preStopSleepSeconds) (div (add (int $ms) 999) 1000) 10 -}}
{{- end -}}
{{- end -}}

{{- define "gantry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "gantry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Checksums of what the pods read at start: a change rolls them. */}}
{{- define "gantry.checksums" -}}
checksum/config: {{ include "gantry.config" . | sha256sum }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
checksum/tls: {{ printf "%s%s%s" .Values.tls.cert .Values.tls.key .Values.tls.ca | sha256sum }}
{{- end }}
{{- end -}}

{{/* Probes; .grpc: readiness by grpc.health.v1 on the gRPC port (proxy only). */}}
{{- define "gantry.probes" -}}
{{- $v := .ctx.Values -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ $v.probes.startup.periodSeconds }}
  failureThreshold: {{ $v.probes.startup.failureThreshold }}
readinessProbe:
  {{- if and .grpc $v.probes.readiness.grpcHealth }}
  {{- if and $v.tls.enabled (eq $v.tls.grpcMode "enforcing") }}
  {{- fail "probes.readiness.grpcHealth: the kubelet's gRPC probe speaks plaintext; tls.grpcMode enforcing refuses it (use permissive or /readyz)" }}
  {{- end }}
  grpc: {port: 8081}
  {{- else }}
  httpGet: {path: /readyz, port: http}
  {{- end }}
  periodSeconds: {{ $v.probes.readiness.periodSeconds }}
  failureThreshold: {{ $v.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ $v.probes.liveness.periodSeconds }}
  failureThreshold: {{ $v.probes.liveness.failureThreshold }}
{{- end -}}

{{- define "gantry.preStop" -}}
{{- if gt (int .Values.preStopSleepSeconds) 0 -}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ .Values.preStopSleepSeconds }}
{{- end }}
{{- end -}}

{{/* The gantry container (proxy or embedded pod). */}}
{{- define "gantry.proxyContainer" -}}
- name: gantry
  image: {{ include "gantry.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - --config
    - /etc/gantry/config/gantry.yaml
    {{- if not (include "gantry.clustered" .) }}
    - --data-dir
    - /data
    {{- end }}
    {{- with .Values.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - {name: grpc, containerPort: 8081, protocol: TCP}
    - {name: http, containerPort: 5557, protocol: TCP}
    {{- if .Values.amqp.enabled }}
    - {name: amqp, containerPort: 5672, protocol: TCP}
    {{- end }}
    {{- if and .Values.tls.enabled .Values.tls.amqps }}
    - {name: amqps, containerPort: 5671, protocol: TCP}
    {{- end }}
  {{- with .Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "gantry.probes" (dict "ctx" . "grpc" true) | nindent 2 }}
  {{- with include "gantry.preStop" . }}{{ . | nindent 2 }}{{ end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- include "gantry.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/gantry/config, readOnly: true}
    - {name: tmp, mountPath: /tmp}
    {{- if not (include "gantry.clustered" .) }}
    - {name: data, mountPath: /data}
    {{- end }}
    {{- if .Values.tls.enabled }}
    - {name: tls, mountPath: /etc/gantry/tls, readOnly: true}
    {{- end }}
{{- end -}}

{{- define "gantry.proxyVolumes" -}}
- name: config
  {{- if or .Values.existingConfigSecret .Values.configInSecret }}
  secret:
    secretName: {{ .Values.existingConfigSecret | default (printf "%s-config" (include "gantry.fullname" .)) }}
    items: [{key: gantry.yaml, path: gantry.yaml}]
  {{- else }}
  configMap:
    name: {{ include "gantry.fullname" . }}
    items: [{key: gantry.yaml, path: gantry.yaml}]
  {{- end }}
- name: tmp
  emptyDir: {}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "gantry.tlsSecret" . }}
{{- end }}
{{- end -}}

{{- define "gantry.podCommon" -}}
serviceAccountName: {{ include "gantry.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "gantry.grace" . }}
securityContext:
  {{- include "gantry.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "gantry.pvcSpec" -}}
accessModes:
  {{- toYaml .Values.persistence.accessModes | nindent 2 }}
{{- with .Values.persistence.storageClass }}
storageClassName: {{ . }}
{{- end }}
resources:
  requests:
    storage: {{ .Values.persistence.size }}
{{- end -}}
