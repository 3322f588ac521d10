{{/* The package a worker entry runs (its settings class and command): `service`, else its key. */}}
{{- define "indutech.service" -}}
{{- .w.service | default .name -}}
{{- end -}}

{{/* The env prefix of a service's settings class: iot-to-s3 -> IOT_TO_S3_. */}}
{{- define "indutech.prefix" -}}
{{- printf "%s_" (. | upper | replace "-" "_") -}}
{{- end -}}

{{- define "indutech.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object of one worker (dict: root, name, component). */}}
{{- define "indutech.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: indutech-flows
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component | default "worker" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* What selects a worker's pods (stable across upgrades: never add a label here). */}}
{{- define "indutech.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "indutech.roleArn" -}}
{{- $aws := .root.Values.aws -}}
{{- index $aws.roleArnOverride .name | default (printf "arn:aws:iam::%s:role/%s%s" $aws.accountId $aws.rolePrefix .name) -}}
{{- end -}}

{{- define "indutech.metadata" -}}
name: {{ .objectName | default .name }}
namespace: {{ .root.Release.Namespace }}
labels:
{{ include "indutech.labels" . | indent 2 }}
{{- end -}}

{{/*
The pod spec of one worker process (dict: root, name, w, args, component, probes).
Workloads and CronJobs share it, so a CronJob's pod gets the same account, Secret
items, CA and hardening as the worker it belongs to.
*/}}
{{- define "indutech.podSpec" -}}
{{- $root := .root -}}
{{- $w := .w -}}
{{- $name := .name -}}
{{- $prefix := include "indutech.prefix" (include "indutech.service" .) -}}
serviceAccountName: {{ $name }}
automountServiceAccountToken: false
{{- if .probes }}
terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds | default 45 }}
{{- end }}
securityContext:
{{ toYaml $root.Values.podSecurityContext | indent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- if not .probes }}
restartPolicy: OnFailure
{{- end }}
containers:
  - name: {{ .containerName | default $name }}
    image: {{ include "indutech.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
{{ toYaml .args | indent 6 }}
    envFrom:
      - configMapRef: {name: indutech-shared}
      - configMapRef: {name: {{ $name }}}
{{- with $w.envFromPod }}
    env:
{{- range $var, $field := . }}
      - name: {{ $var }}
        valueFrom:
          fieldRef: {fieldPath: {{ $field }}}
{{- end }}
{{- end }}
{{- if .probes }}
    ports:
      - {name: http, containerPort: {{ $root.Values.metrics.port }}, protocol: TCP}
    readinessProbe:
      httpGet: {path: {{ $root.Values.probes.readiness.path }}, port: http}
      periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
      failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
    livenessProbe:
      httpGet: {path: {{ $root.Values.probes.liveness.path }}, port: http}
      periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
      failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
{{- end }}
    resources:
{{ toYaml (.resources | default $w.resources) | indent 6 }}
    securityContext:
{{ toYaml $root.Values.containerSecurityContext | indent 6 }}
    volumeMounts:
      - {name: secrets, mountPath: {{ $root.Values.shared.INDUTECH_SECRETS_DIR }}, readOnly: true}
      - {name: ca, mountPath: /etc/indutech/ca, readOnly: true}
      - {name: tmp, mountPath: /tmp}
{{- with $w.san }}
      - {name: san, mountPath: {{ .mountPath }}, readOnly: true}
{{- end }}
{{- with $w.mapping }}
      - {name: mapping, mountPath: {{ .mountPath }}, readOnly: true}
{{- end }}
{{- if and $w.persistence .probes }}
      - {name: state, mountPath: {{ $w.persistence.mountPath }}}
{{- end }}
volumes:
  - name: secrets
    secret:
      secretName: {{ $name }}-secrets
      defaultMode: 0400
      # Only the keys this worker needs, even if the Secret holds more.
      items:
{{- range $w.secretKeys }}
        - {key: {{ . }}, path: {{ . }}}
{{- end }}
  - name: ca
    configMap: {name: {{ $root.Values.ca.name }}}
  - name: tmp
    emptyDir: {sizeLimit: {{ $w.tmpSize | default "64Mi" }}}
{{- with $w.san }}
  - name: san
    persistentVolumeClaim: {claimName: {{ .claimName }}, readOnly: true}
{{- end }}
{{- with $w.mapping }}
  - name: mapping
    configMap: {name: {{ if .toml }}{{ $name }}-mapping{{ else }}{{ .existingConfigMap }}{{ end }}}
{{- end }}
{{- end -}}
