{{/* Labels common to every object of this chart. */}}
{{- define "base.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ambient-mesh
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Annotations of the mesh CRDs. */}}
{{- define "base.crdAnnotations" -}}
{{- if .Values.crds.keep }}
helm.sh/resource-policy: keep
{{- end }}
{{- end }}

{{/* selector.matchLabels, shared by the policies. */}}
{{- define "base.schema.selector" -}}
description: Workloads the resource applies to, by pod labels, in its namespace (or the whole mesh
  from the root namespace). Without it, every workload of the namespace.
type: object
properties:
  matchLabels:
    description: Pod labels that must all match.
    type: object
    additionalProperties:
      type: string
      maxLength: 63
    maxProperties: 4096
    x-kubernetes-validations:
      - rule: "self.all(key, !key.contains('*'))"
        message: wildcard not allowed in label key match
      - rule: "self.all(key, key.size() != 0)"
        message: key must not be empty
{{- end }}

{{/* A Gateway API style policy target reference. */}}
{{- define "base.schema.targetRef" -}}
type: object
required: [kind, name]
properties:
  group:
    description: API group of the target (empty for the core group).
    type: string
    maxLength: 253
    pattern: ^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$
  kind:
    description: Kind of the target (Service, Gateway, GatewayClass, ServiceEntry).
    type: string
    minLength: 1
    maxLength: 63
    pattern: ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$
  name:
    description: Name of the target.
    type: string
    minLength: 1
    maxLength: 253
  namespace:
    description: Namespace of the target; must be the policy's own namespace when set.
    type: string
x-kubernetes-validations:
  - rule: "[has(self.group) ? self.group : '', self.kind] in [['core', 'Service'], ['', 'Service'], ['gateway.networking.k8s.io', 'Gateway'], ['gateway.networking.k8s.io', 'GatewayClass'], ['networking.istio.io', 'ServiceEntry']]"
    message: supported kinds are core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway and gateway.networking.k8s.io/GatewayClass
  - rule: "!has(self.__namespace__) || self.__namespace__.size() == 0"
    message: cross namespace referencing is not currently supported
{{- end }}

{{/* A list of strings inside a rule (principals, paths, ports, ...). */}}
{{- define "base.schema.strings" -}}
type: array
items:
  type: string
{{- end }}
