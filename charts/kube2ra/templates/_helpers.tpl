{{/* Chart name, cut to the 63 characters a label value allows. */}}
{{- define "kube2ra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name: the release name, or release-chart when the release name lacks the chart's. */}}
{{- define "kube2ra.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "kube2ra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kube2ra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{/* Labels the DaemonSet selects its pods by; never change them in an upgrade. */}}
{{- define "kube2ra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube2ra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kube2ra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kube2ra.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kube2ra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
"true" when the agent will use Roles Anywhere and so needs a node certificate:
credentialSource rolesanywhere, or auto with a trust anchor (the agent's auto rule).
*/}}
{{- define "kube2ra.rolesAnywhere" -}}
{{- $ra := .Values.rolesAnywhere -}}
{{- if or (eq .Values.credentialSource "rolesanywhere") (and (eq .Values.credentialSource "auto") $ra.trustAnchorArn) -}}
true
{{- end -}}
{{- end -}}

{{/*
Which certificate source is configured: secret, certManager or csiDriver. Fails unless
exactly one is, so a half-configured Roles Anywhere install never reaches the cluster.
*/}}
{{- define "kube2ra.certificateSource" -}}
{{- $c := .Values.rolesAnywhere.certificate -}}
{{- $sources := list -}}
{{- if $c.existingSecret -}}{{- $sources = append $sources "secret" -}}{{- end -}}
{{- if $c.certManager.enabled -}}{{- $sources = append $sources "certManager" -}}{{- end -}}
{{- if $c.csiDriver.enabled -}}{{- $sources = append $sources "csiDriver" -}}{{- end -}}
{{- if ne (len $sources) 1 -}}
{{- fail (printf "Roles Anywhere needs exactly one node certificate source, found %d (%s): set rolesAnywhere.certificate.existingSecret, or certManager.enabled, or csiDriver.enabled" (len $sources) (join ", " $sources)) -}}
{{- end -}}
{{- first $sources -}}
{{- end -}}

{{/* Name of the Secret holding the node certificate (secret and certManager sources). */}}
{{- define "kube2ra.certificateSecretName" -}}
{{- if .Values.rolesAnywhere.certificate.existingSecret -}}
{{- .Values.rolesAnywhere.certificate.existingSecret -}}
{{- else -}}
{{- printf "%s-node-certificate" (include "kube2ra.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the node certificate is mounted in the container. */}}
{{- define "kube2ra.certificateDir" -}}/etc/kube2ra/node-certificate{{- end -}}

{{/* The container port serving /healthz, /readyz and /metrics: "proxy" when
ports.metrics equals ports.app (kube2iam's one-port layout; a container may
not declare one port twice), else "metrics". */}}
{{/* "true" when the agent hands its listening sockets to its successor (handover.enabled,
auto: when it runs as root; the non-root agent cannot own the host directory), else "". */}}
{{- define "kube2ra.handover" -}}
{{- $root := or .Values.host.iptables .Values.cni.enabled -}}
{{- if eq (toString .Values.handover.enabled) "auto" -}}
{{- if $root -}}true{{- end -}}
{{- else if eq (toString .Values.handover.enabled) "true" -}}true{{- end -}}
{{- end -}}

{{/* The probes' and the metrics Service's port: the number when the container declares no
ports (with the handover: a declared port of a hostNetwork pod is a host port to the scheduler,
which would keep the surge pod Pending beside the old one), else the port's name. */}}
{{- define "kube2ra.opsPort" -}}
{{- if include "kube2ra.handover" . -}}{{ .Values.ports.metrics }}{{- else -}}{{ include "kube2ra.opsPortName" . }}{{- end -}}
{{- end -}}

{{- define "kube2ra.opsPortName" -}}
{{- if eq (int .Values.ports.app) (int .Values.ports.metrics) -}}proxy{{- else -}}metrics{{- end -}}
{{- end -}}
