{{/*
Checks that cross several values (the schema checks each value alone). Each failure names
the value to set. Included once, from the DaemonSet.
*/}}
{{- define "kube2ra.validate" -}}
{{- $ra := .Values.rolesAnywhere -}}
{{- $c := $ra.certificate -}}
{{- if include "kube2ra.rolesAnywhere" . -}}
{{- if not $ra.trustAnchorArn -}}
{{- fail "credentialSource rolesanywhere needs rolesAnywhere.trustAnchorArn (arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID)" -}}
{{- end -}}
{{- if not $ra.profileArn -}}
{{- fail "Roles Anywhere needs rolesAnywhere.profileArn (arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID)" -}}
{{- end -}}
{{- $source := include "kube2ra.certificateSource" . -}}
{{- if and (eq $source "certManager") (not $c.certManager.issuerRef.name) -}}
{{- fail "rolesAnywhere.certificate.certManager.enabled needs certManager.issuerRef.name: the cert-manager issuer whose CA is the trust anchor" -}}
{{- end -}}
{{- if and (eq $source "csiDriver") (not $c.csiDriver.issuerRef.name) -}}
{{- fail "rolesAnywhere.certificate.csiDriver.enabled needs csiDriver.issuerRef.name: the cert-manager issuer whose CA is the trust anchor" -}}
{{- end -}}
{{- else if or $c.existingSecret $c.certManager.enabled $c.csiDriver.enabled -}}
{{- fail (printf "a node certificate is configured but credentialSource %q does not use Roles Anywhere: set credentialSource to rolesanywhere (or auto with rolesAnywhere.trustAnchorArn), or remove rolesAnywhere.certificate" .Values.credentialSource) -}}
{{- end -}}
{{- if and (eq .Values.sessionTags "eks") (not .Values.clusterName) -}}
{{- fail "sessionTags: eks needs clusterName (the eks-cluster-name session tag)" -}}
{{- end -}}
{{- if and (eq (toString .Values.handover.enabled) "true") (not (or .Values.host.iptables .Values.cni.enabled)) -}}
{{- fail "handover.enabled: true needs the root agent (host.iptables or cni.enabled): the non-root agent (uid 65532) cannot own handover.hostPath; use handover.enabled: auto (or false), which rolls out with updateStrategy maxUnavailable" -}}
{{- end -}}
{{- $surge := dig "rollingUpdate" "maxSurge" 0 .Values.updateStrategy -}}
{{- if and (not (include "kube2ra.handover" .)) $surge (ne (toString $surge) "0") (ne (toString $surge) "0%") -}}
{{- fail "updateStrategy.rollingUpdate.maxSurge needs the handover (handover.enabled, root agent): without it the surge agent cannot bind the ports the old agent holds, and the rollout stops; use maxUnavailable" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled (a ServiceMonitor selects a Service); or use metrics.podMonitor" -}}
{{- end -}}
{{- end -}}
