//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// Node is the running node: its daemons and what they were started with.
type Node struct {
	CP         *controlplane.ControlPlane
	containerd *daemon
	kubelet    *daemon
	kubeProxy  *daemon
	// RegisterTaints are the kubelet's --register-with-taints (key=value:Effect).
	RegisterTaints string
	pauseImage     string
	kubeletKC      string
	proxyKC        string
}

// Socket is containerd's socket.
var Socket = dir("containerd", "containerd.sock")

func kubeBinary(name string) string {
	return filepath.Join(controlplane.CacheDir(), name+"-"+controlplane.KubeVersion)
}

// writeConfigs writes containerd's, the CNI's, the kubelet's and
// kube-proxy's configuration under Root.
func (n *Node) writeConfigs() error {
	containerd := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Without it runc fails with "can't get final child's PID from pipe": the
  # sandbox may not lower its oom_score_adj here.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  # One hosts.toml per registry (StartRegistry writes the tier's, with its CA).
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, dir("containerd", "root"), dir("containerd", "state"), Socket, Socket+".ttrpc", dir("containerd", "opt"),
		n.pauseImage, dir("runc"), dir("cni", "bin"), dir("cni", "net.d"), dir("containerd", "certs.d"))
	cni := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "k2rc",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": Bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": PodCIDR}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": dir("cni", "ipam"),
			},
		}},
	}
	cniJSON, err := json.Marshal(cni)
	if err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Measured on the test machines (cgroup v1, swap, no systemd in charge).
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
containerRuntimeEndpoint: unix://%s
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
podLogsDir: %s
resolvConf: %s
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
maxPods: 110
`, Socket, NodeIP, filepath.Join(n.CP.Dir, "ca.crt"), dir("kubelet", "logs"), dir("resolv.conf"))
	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: %s
# A network namespace may not change the host's conntrack table size.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, n.proxyKC, NodeName, NodeIP, PodCIDR)
	files := map[string]string{
		dir("containerd", "config.toml"):        containerd,
		dir("cni", "net.d", "10-k2rc.conflist"): string(cniJSON),
		dir("kubelet", "config.yaml"):           kubelet,
		dir("kube-proxy.yaml"):                  proxy,
		dir("resolv.conf"):                      "nameserver " + HostIP + "\n",
	}
	for path, body := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return err
		}
	}
	return linkCNIPlugins()
}

// debianCNIDir holds the containernetworking-plugins the node's primary
// conflist runs (bridge, host-local, loopback).
const debianCNIDir = "/usr/lib/cni"

// linkCNIPlugins makes the node's own CNI bin directory, holding Debian's
// plugins as links, so the agent's CNI installer writes kube2ra-cni into
// the node's directory and never into the machine's /usr/lib/cni.
func linkCNIPlugins() error {
	if err := os.MkdirAll(dir("cni", "bin"), 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(debianCNIDir)
	if err != nil {
		return fmt.Errorf("the bridge CNI: %w (apt-get install containernetworking-plugins)", err)
	}
	for _, e := range entries {
		link := dir("cni", "bin", e.Name())
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(debianCNIDir, e.Name()), link); err != nil {
			return err
		}
	}
	return nil
}

// startContainerd starts containerd and imports the images.
func (n *Node) startContainerd(ctx context.Context, images map[string]Image) error {
	var err error
	if n.containerd, err = startDaemon("containerd", "containerd", "--config", dir("containerd", "config.toml")); err != nil {
		return err
	}
	if err := waitFor(ctx, "containerd answering on "+Socket, 30*time.Second, n.containerd, func() error {
		_, err := run(ctx, "ctr", "--address", Socket, "version")
		return err
	}); err != nil {
		return err
	}
	for _, img := range images {
		if err := n.importImage(ctx, img); err != nil {
			return err
		}
	}
	return nil
}

// startKubelet starts the kubelet and waits for its Node to be Ready.
func (n *Node) startKubelet(ctx context.Context, ready func() error) error {
	args := []string{
		"--config", dir("kubelet", "config.yaml"),
		"--kubeconfig", n.kubeletKC,
		"--root-dir", dir("kubelet", "root"),
		"--cert-dir", dir("kubelet", "pki"),
		"--hostname-override", NodeName,
		"--node-ip", NodeIP,
		"--v", "1",
	}
	if n.RegisterTaints != "" {
		args = append(args, "--register-with-taints", n.RegisterTaints)
	}
	var err error
	if n.kubelet, err = startDaemon("kubelet", kubeBinary("kubelet"), args...); err != nil {
		return err
	}
	return waitFor(ctx, "the kubelet's Node Ready", 90*time.Second, n.kubelet, ready)
}

// startKubeProxy starts kube-proxy and waits for its health endpoint.
func (n *Node) startKubeProxy(ctx context.Context) error {
	var err error
	if n.kubeProxy, err = startDaemon("kube-proxy", kubeBinary("kube-proxy"), "--config", dir("kube-proxy.yaml"), "--v", "1"); err != nil {
		return err
	}
	return waitFor(ctx, "kube-proxy's rules for the kubernetes Service", 60*time.Second, n.kubeProxy, func() error {
		out, err := inNode(ctx, "iptables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "default/kubernetes:https") {
			return fmt.Errorf("no rule for default/kubernetes yet")
		}
		return nil
	})
}

// kubeletHealthy is the kubelet's /healthz in the node namespace.
func kubeletHealthy(ctx context.Context) error {
	out, err := inNode(ctx, "curl", "-sf", "--max-time", "2", "http://127.0.0.1:10248/healthz")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "ok" {
		return fmt.Errorf("kubelet /healthz: %q", out)
	}
	return nil
}

// Stop stops the node's daemons, kubelet first.
func (n *Node) Stop() {
	n.kubeProxy.stop()
	n.kubelet.stop()
	n.containerd.stop()
}

// reboot is what a node reboot does to the node (powerOff), then
// containerd, the kubelet and kube-proxy start again; the Node object stays,
// so the kubelet does not register it anew and --register-with-taints is
// not applied again.
func (n *Node) reboot(ctx context.Context) error {
	n.powerOff(ctx)
	return n.powerOn(ctx, nil)
}

// powerOff is what losing power does to the node: every container and node
// daemon dies, the iptables rules and the pods' network namespaces are gone;
// the runtime's and the kubelet's files (and the CNI directories) stay.
func (n *Node) powerOff(ctx context.Context) {
	n.kubeProxy.stop()
	n.kubelet.stop()
	n.containerd.stop()
	if out, err := run(ctx, "runc", "--root", dir("runc", "k8s.io"), "list", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = run(ctx, "runc", "--root", dir("runc", "k8s.io"), "delete", "--force", id)
		}
	}
	killMatching(dir("containerd"))
	// A reboot takes the pods' network namespaces with it (and whatever
	// rules were in them): the runtime makes new ones, and only the CNI
	// plugins on disk put rules into them.
	for _, ns := range podNetNS() {
		_, _ = run(ctx, "ip", "netns", "delete", ns)
	}
	for _, b := range []string{"iptables-legacy", "iptables-nft"} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			_, _ = inNode(ctx, b, "-w", "5", "-t", table, "-F")
			_, _ = inNode(ctx, b, "-w", "5", "-t", table, "-X")
		}
	}
}

// powerOn starts containerd, runs beforeKubelet (if any) once it answers,
// then the kubelet (until its /healthz is ok) and kube-proxy.
func (n *Node) powerOn(ctx context.Context, beforeKubelet func() error) error {
	var err error
	if n.containerd, err = startDaemon("containerd", "containerd", "--config", dir("containerd", "config.toml")); err != nil {
		return err
	}
	if err := waitFor(ctx, "containerd answering after the restart", 30*time.Second, n.containerd, func() error {
		_, err := run(ctx, "ctr", "--address", Socket, "version")
		return err
	}); err != nil {
		return err
	}
	if beforeKubelet != nil {
		if err := beforeKubelet(); err != nil {
			return err
		}
	}
	// containerd's CRI answers "server is not initialized yet" while it
	// restores its sandboxes; the kubelet exits on that, and a node's
	// service manager would start it again.
	for attempt := 1; ; attempt++ {
		err = n.startKubelet(ctx, func() error { return kubeletHealthy(ctx) })
		if err == nil || attempt == 10 || !n.kubelet.exited() || !strings.Contains(n.kubelet.logTail(5), "not initialized yet") {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return err
	}
	return n.startKubeProxy(ctx)
}

// importImage loads an image archive into containerd, as a pull would.
func (n *Node) importImage(ctx context.Context, img Image) error {
	_, err := run(ctx, "ctr", "--address", Socket, "-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs", img.Archive)
	return err
}

// removeImages deletes every reference to repository (host/name) from
// containerd, by tag and by digest: a new node that has not pulled the
// image yet, so the kubelet pulls it from the registry.
func (n *Node) removeImages(ctx context.Context, repository string) error {
	out, err := run(ctx, "ctr", "--address", Socket, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		return err
	}
	var refs []string
	for _, ref := range strings.Fields(out) {
		if strings.HasPrefix(ref, repository+":") || strings.HasPrefix(ref, repository+"@") {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	_, err = run(ctx, "ctr", append([]string{"--address", Socket, "-n", "k8s.io", "images", "rm"}, refs...)...)
	return err
}
