{{/* Labels common to every object of this chart. */}}
{{- define "cni.labels" -}}
app.kubernetes.io/name: istio-cni
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ambient-mesh
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Pod selector of the agent (meshctl finds it by k8s-app=istio-cni-node). */}}
{{- define "cni.selectorLabels" -}}
k8s-app: istio-cni-node
{{- end }}

{{/* <hub>/<name>:<tag> of the image. */}}
{{- define "cni.image" -}}
{{- $hub := .Values.image.hub | default .Values.global.hub -}}
{{- $tag := toString (.Values.image.tag | default .Values.global.tag | default .Chart.AppVersion) -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $hub) .Values.image.name $tag -}}
{{- end }}
