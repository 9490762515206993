//go:build e2ecluster

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// Image is one archive hack/cluster-images.sh made.
type Image struct {
	Archive, Ref string
}

// Tag is the part of Ref after the last colon.
func (i Image) Tag() string { return i.Ref[strings.LastIndex(i.Ref, ":")+1:] }

// BuildImages runs hack/cluster-images.sh and returns its images by name
// (kube2ra, client, pause).
func BuildImages(ctx context.Context, repo string) (map[string]Image, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", "cluster-images.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/cluster-images.sh: %w (its messages are above)", err)
	}
	images := map[string]Image{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 {
			images[f[0]] = Image{Archive: f[1], Ref: f[2]}
		}
	}
	for _, want := range []string{"kube2ra", "client", "pause"} {
		if _, ok := images[want]; !ok {
			return nil, fmt.Errorf("hack/cluster-images.sh printed no %q image: %q", want, out)
		}
	}
	return images, nil
}

// StartNode brings the node up on a fresh control plane: network namespace,
// containerd with the images imported, kubelet (Node Ready), kube-proxy.
func StartNode(ctx context.Context, images map[string]Image, taints string) (_ *Node, err error) {
	Cleanup()
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(dir(d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := setupNetwork(ctx); err != nil {
		return nil, err
	}
	n := &Node{RegisterTaints: taints, pauseImage: images["pause"].Ref}
	defer func() {
		if err != nil {
			n.Stop()
			if n.CP != nil {
				_ = n.CP.Stop()
			}
		}
	}()
	if n.CP, err = controlplane.Start(ctx, controlplane.Options{BindAddress: HostIP, Controllers: true, Log: nil}); err != nil {
		return nil, err
	}
	if n.kubeletKC, err = n.CP.UserKubeconfig("system:node:"+NodeName, "system:nodes"); err != nil {
		return nil, err
	}
	if n.proxyKC, err = n.CP.UserKubeconfig("system:kube-proxy"); err != nil {
		return nil, err
	}
	if err := n.writeConfigs(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx, images); err != nil {
		return nil, err
	}
	if err := n.checkImages(ctx, images); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(n.CP.AdminConfig())
	if err != nil {
		return nil, err
	}
	if err := n.startKubelet(ctx, func() error { return nodeReady(ctx, kube) }); err != nil {
		return nil, err
	}
	if err := n.startKubeProxy(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// checkImages fails when an imported image is not known by its reference.
func (n *Node) checkImages(ctx context.Context, images map[string]Image) error {
	out, err := run(ctx, "ctr", "--address", Socket, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		return err
	}
	for name, img := range images {
		if !strings.Contains("\n"+out, "\n"+img.Ref+"\n") {
			return fmt.Errorf("image %s (%s) is not in containerd after the import; it has:\n%s", name, img.Ref, out)
		}
	}
	return nil
}

func nodeReady(ctx context.Context, kube kubernetes.Interface) error {
	node, err := kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return nodeReadyIn(node)
}

// nodeReadyIn is nil when node's Ready condition is True.
func nodeReadyIn(node *corev1.Node) error {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s: Ready=%s: %s", NodeName, c.Status, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", NodeName)
}

// ListenInNode listens on addr inside the node's network namespace (the
// metadata service at 169.254.169.254, which only the node reaches). The
// listening socket stays in that namespace after the thread leaves it.
func ListenInNode(addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is never unlocked: it ends with the goroutine instead of
		// going back to the pool in the node's namespace.
		runtime.LockOSThread()
		f, err := os.Open(netnsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("entering %s: %w", netnsPath, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// replace brings the node back as a new one, as a node that a cluster
// autoscaler adds under a reused name: it loses power, its Node object and
// every pod bound to it are deleted (a new node has neither), and the
// kubelet registers anew with taints as --register-with-taints.
// beforeKubelet runs once containerd answers, before the kubelet starts.
func (n *Node) replace(ctx context.Context, kube kubernetes.Interface, taints string, beforeKubelet func() error) error {
	n.powerOff(ctx)
	// The Node first: with it gone the DaemonSet controller makes no new
	// agent pod for the pods deleted next.
	if err := kube.CoreV1().Nodes().Delete(ctx, NodeName, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("deleting Node %s: %w", NodeName, err)
	}
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + NodeName})
	if err != nil {
		return err
	}
	zero := int64(0)
	for _, p := range pods.Items {
		if err := kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting pod %s/%s of the old node: %w", p.Namespace, p.Name, err)
		}
	}
	n.RegisterTaints = taints
	return n.powerOn(ctx, beforeKubelet)
}
