{{/* Labels common to every object of this chart. */}}
{{- define "istiod.labels" -}}
app.kubernetes.io/name: istiod
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ambient-mesh
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Pod selector of istiod (meshctl finds istiod by app=istiod). */}}
{{- define "istiod.selectorLabels" -}}
app: istiod
istio: pilot
{{- end }}

{{/* <hub>/<name>:<tag> of an image: dict "image" <image values> "root" $. */}}
{{- define "istiod.imageRef" -}}
{{- $hub := .image.hub | default .root.Values.global.hub -}}
{{- $tag := toString (.image.tag | default .root.Values.global.tag | default .root.Chart.AppVersion) -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $hub) .image.name $tag -}}
{{- end }}

{{/* The namespace istiod runs in; it must be global.istioNamespace, where the data plane looks for it. */}}
{{- define "istiod.namespace" -}}
{{- if ne .Release.Namespace .Values.global.istioNamespace -}}
{{- fail (printf "istiod is installed in namespace %q but global.istioNamespace is %q: ztunnel and the waypoints look for istiod (and its identity spiffe://<trust domain>/ns/<namespace>/sa/istiod) in global.istioNamespace; install into that namespace or set global.istioNamespace=%s" .Release.Namespace .Values.global.istioNamespace .Release.Namespace) -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end }}

{{/* Default xDS/CA address of the data plane. */}}
{{- define "istiod.xdsAddress" -}}
{{- printf "https://istiod.%s.svc:15012" .Values.global.istioNamespace -}}
{{- end }}

{{/*
The root CA as {cert, key} in PEM, or an empty dict when the chart does not know it:
ca.mode=generate: the existing Secret (lookup) or a new self-signed root;
ca.mode=secret: the Secret read from the cluster (lookup; empty in `helm template`);
ca.mode=istiod: empty.
Computed once per rendering and cached, so the Secret, the root ConfigMap and the webhook's
caBundle agree.
*/}}
{{- define "istiod.rootCA" -}}
{{- if not (hasKey .Values "_rootCA") -}}
{{- $ca := dict -}}
{{- $s := .Values.ca.secret -}}
{{- if has .Values.ca.mode (list "generate" "secret") -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $s.name -}}
{{- if and $existing $existing.data (hasKey $existing.data $s.certKey) (hasKey $existing.data $s.keyKey) -}}
{{- $ca = dict "cert" (index $existing.data $s.certKey | b64dec) "key" (index $existing.data $s.keyKey | b64dec) "existing" true -}}
{{- else if eq .Values.ca.mode "generate" -}}
{{- $gen := genCAWithKey (printf "%s root CA" .Values.global.trustDomain) (int .Values.ca.rootValidityDays) (genPrivateKey "ecdsa") -}}
{{- $ca = dict "cert" $gen.Cert "key" $gen.Key "existing" false -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "_rootCA" $ca -}}
{{- end -}}
{{- toJson .Values._rootCA -}}
{{- end }}

{{/* Name of istiod's ValidatingWebhookConfiguration. */}}
{{- define "istiod.webhookName" -}}
istio-validator-{{ .Release.Namespace }}
{{- end }}

{{/* Service accounts of the node proxies, <namespace>/<name>, comma separated. */}}
{{- define "istiod.ztunnelServiceAccounts" -}}
{{- $accounts := .Values.ca.ztunnelServiceAccounts | default (list (printf "%s/ztunnel" .Values.global.istioNamespace)) -}}
{{- join "," $accounts -}}
{{- end }}

{{/* Environment of the istiod container: its flags (each flag also reads an environment variable). */}}
{{- define "istiod.env" -}}
- name: CONFIG_SOURCE
  value: kubernetes
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: ISTIOD_SERVICE
  value: istiod
- name: ROOT_NAMESPACE
  value: {{ include "istiod.namespace" . | quote }}
- name: TRUST_DOMAIN
  value: {{ .Values.global.trustDomain | quote }}
- name: DOMAIN_SUFFIX
  value: {{ .Values.domainSuffix | quote }}
- name: CLUSTER_ID
  value: {{ .Values.clusterId | quote }}
- name: PILOT_DEBOUNCE_AFTER
  value: {{ .Values.debounce.after | quote }}
- name: PILOT_DEBOUNCE_MAX
  value: {{ .Values.debounce.max | quote }}
- name: LEADER_ELECTION_LEASE
  value: {{ .Values.leaderElection.lease | quote }}
- name: LEADER_ELECTION_DURATION
  value: {{ .Values.leaderElection.leaseDuration | quote }}
- name: CA_DIR
  value: /var/lib/istiod/ca
{{- /* The root is in CA_DIR (a Secret volume) unless istiod keeps it in a Secret itself. */}}
- name: CA_SECRET
  value: {{ if eq .Values.ca.mode "istiod" }}{{ .Values.ca.secret.name | quote }}{{ else }}""{{ end }}
- name: CA_TOKEN_AUDIENCE
  value: {{ .Values.ca.tokenAudience | quote }}
- name: ZTUNNEL_SERVICE_ACCOUNTS
  value: {{ include "istiod.ztunnelServiceAccounts" . | quote }}
- name: MAX_WORKLOAD_CERT_TTL
  value: {{ .Values.maxWorkloadCertTTL | quote }}
- name: VALIDATION_WEBHOOK_CONFIG_NAME
  value: {{ if .Values.webhook.enabled }}{{ include "istiod.webhookName" . | quote }}{{ else }}""{{ end }}
- name: WAYPOINT_CONTROLLER
  value: {{ .Values.waypoint.controller | quote }}
{{- /* The chart creates the GatewayClass when the Gateway API is served at install time. */}}
- name: CREATE_GATEWAY_CLASS
  value: {{ not (and .Values.waypoint.gatewayClass.create (.Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1/GatewayClass")) | quote }}
- name: WAYPOINT_IMAGE
  value: {{ include "istiod.imageRef" (dict "image" .Values.waypoint.image "root" .) | quote }}
- name: WAYPOINT_IMAGE_PULL_POLICY
  value: {{ .Values.waypoint.image.pullPolicy | quote }}
{{- with .Values.waypoint.xdsAddress }}
- name: WAYPOINT_XDS_ADDRESS
  value: {{ . | quote }}
{{- end }}
{{- /* Owns the ConfigMaps, Secret and Lease istiod creates: helm uninstall removes them. */}}
- name: OWNER_CLUSTER_ROLE
  value: istiod-{{ .Release.Namespace }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
