package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

func TestResolveHostIPv6(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "n1"},
		{Type: corev1.NodeInternalIP, Address: "10.0.0.5"},
		{Type: corev1.NodeExternalIP, Address: "2001:db8::99"},
		{Type: corev1.NodeInternalIP, Address: "fd00:10::5"},
	}}}
	tests := []struct {
		name            string
		cfg             Config
		node            *corev1.Node
		want, wantFrom  string
		wantErrContains string
	}{
		{name: "given: kept", cfg: Config{IPv6: true, HostIPv6: "fd00::1"}, node: node, want: "fd00::1"},
		{name: "IPv6 off: nothing to find", cfg: Config{}, node: node, want: ""},
		{name: "from HOST_IPS (status.hostIPs)", cfg: Config{IPv6: true, HostIPs: "10.0.0.5, fd00:20::5"}, node: node, want: "fd00:20::5", wantFrom: "--host-ips"},
		{name: "from the Node object, InternalIP before ExternalIP", cfg: Config{IPv6: true, HostIPs: "10.0.0.5"}, node: node, want: "fd00:10::5", wantFrom: "the Node object's InternalIP"},
		{name: "no IPv6 anywhere: an error naming the fix", cfg: Config{IPv6: true},
			node:            &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}}}},
			wantErrContains: "set --host-ipv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Node = "n1"
			from, err := resolveHostIPv6(context.Background(), &cfg, kubeapitest.FromClientset(fake.NewClientset(tt.node)))
			if tt.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrContains) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErrContains)
				}
				return
			}
			if err != nil || cfg.HostIPv6 != tt.want || from != tt.wantFrom {
				t.Errorf("HostIPv6 = %q from %q (%v), want %q from %q", cfg.HostIPv6, from, err, tt.want, tt.wantFrom)
			}
		})
	}
}
