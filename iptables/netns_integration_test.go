//go:build integration

package iptables_test

// The harness: a "node" network namespace with HOST_IP on a portless bridge
// and a small HTTP server on HOST_IP:port, and "pod" namespaces joined to it
// by veth pairs whose node ends carry the names the interface specs match.
// The package's code runs inside the node namespace by re-executing this
// test binary under `ip netns exec` (go-iptables forks iptables, which must
// inherit the namespace), and pods dial the metadata address the same way.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/iptables"
)

const (
	helperEnv   = "K2R_IPT_HELPER"
	netnsPrefix = "k2r-ipt-"
	// guardNetnsPrefix names the namespaces of the guard's tests.
	guardNetnsPrefix = "k2g-"
	hostIP           = "10.198.0.1"
	hostIPv6         = "fd00:198::1"
	appPort          = 8181
	// dialTimeout bounds one pod request: an unredirected request is dropped
	// by the node (no forwarding, no route), so it ends in this timeout.
	dialTimeout = time.Second
	// commandTimeout bounds every command the harness runs.
	commandTimeout = 15 * time.Second
	serverBody     = "kube2ra-test-server"
)

var requiredTools = []string{"ip", "iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy",
	"iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the iptables integration tests create network namespaces and need root: run them as root (sudo go test -tags integration ./iptables/)")
		os.Exit(1)
	}
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "%s is missing: install it with apt-get install -y iptables iproute2\n", tool)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// ---- helper processes (run inside a namespace) ----

// helperRequest tells a rules helper what to build and which verbs to run.
type helperRequest struct {
	Mode            string        `json:"mode"`
	Interfaces      string        `json:"interfaces"`
	HostIP          string        `json:"hostIP"`
	Port            int           `json:"port"`
	IPv6            bool          `json:"ipv6"`
	HostIPv6        string        `json:"hostIPv6"`
	PodIdentity     bool          `json:"podIdentity"`
	PodIPs          []string      `json:"podIPs"`
	IPv6Guard       bool          `json:"ipv6Guard"`
	LockTimeout     time.Duration `json:"lockTimeout"`
	Ops             []string      `json:"ops"`
	MonitorInterval time.Duration `json:"monitorInterval"`
}

type opResult struct {
	Op      string `json:"op"`
	Changed bool   `json:"changed"`
	Present bool   `json:"present"`
	Err     string `json:"err"`
}

type helperResult struct {
	Backend string `json:"backend"`
	// Uncovered lists "ip interface" for the coverage op.
	Uncovered []string `json:"uncovered"`
	// Unroutable lists the coverage op's addresses with no route.
	Unroutable []string   `json:"unroutable"`
	Ops        []opResult `json:"ops"`
	Restores   float64    `json:"restores"`
	Present    float64    `json:"present"`
	NewErr     string     `json:"newErr"`
}

func runHelper(mode string) int {
	switch mode {
	case "serve":
		return helperServe()
	case "dial":
		return helperDial()
	case "rules":
		return helperRules()
	}
	fmt.Fprintf(os.Stderr, "unknown helper %q\n", mode)
	return 2
}

// helperServe answers HTTP on every address in K2R_IPT_ADDRS until stdin
// closes, naming the address that answered so a test can tell kube2ra's
// port from the metadata service's.
func helperServe() int {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %v %s %s", serverBody, r.Context().Value(http.LocalAddrContextKey), r.Host, r.RemoteAddr)
	})
	for _, addr := range strings.Split(os.Getenv("K2R_IPT_ADDRS"), ",") {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() { _ = http.Serve(l, mux) }()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// helperDial fetches K2R_IPT_URL and prints the body, or "ERR <elapsed>
// <error>" so the caller can bound the failure without counting the time
// this process took to start.
func helperDial() int {
	c := &http.Client{Timeout: dialTimeout}
	start := time.Now()
	resp, err := c.Get(os.Getenv("K2R_IPT_URL"))
	if err != nil {
		fmt.Printf("ERR %s %v", time.Since(start), err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Print(string(b))
	return 0
}

// helperRules runs the package's verbs and prints a helperResult as JSON.
// "monitor" prints "monitoring" and runs until stdin closes.
func helperRules() int {
	var req helperRequest
	if err := json.Unmarshal([]byte(os.Getenv("K2R_IPT_REQUEST")), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.DebugLevel)
	ifaces, err := iptables.ParseInterfaces(req.Interfaces)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	reg := prometheus.NewRegistry()
	cfg := iptables.Config{
		HostIP: netip.MustParseAddr(req.HostIP), Port: req.Port, Interfaces: ifaces,
		IPv6: req.IPv6, Mode: iptables.Mode(req.Mode), LockTimeout: req.LockTimeout,
		PodIdentity: req.PodIdentity, IPv6Guard: req.IPv6Guard, Logger: log, Registerer: reg,
	}
	if req.IPv6 {
		cfg.HostIPv6 = netip.MustParseAddr(req.HostIPv6)
	}
	ctx := context.Background()
	var res helperResult
	r, err := iptables.New(ctx, cfg)
	if err != nil {
		res.NewErr = err.Error()
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return 0
	}
	res.Backend = string(r.Backend())
	for _, op := range req.Ops {
		o := opResult{Op: op}
		switch op {
		case "ensure":
			o.Changed, err = r.EnsureRules(ctx)
		case "present":
			o.Present, err = r.RulesPresent(ctx)
		case "remove":
			err = r.Remove(ctx)
		case "removeall":
			err = iptables.RemoveAll(ctx, log)
		case "nodeipv6":
			var addrs []netip.Addr
			addrs, err = iptables.NodeIPv6Addrs()
			for _, a := range addrs {
				res.Uncovered = append(res.Uncovered, a.String())
			}
		case "coverage":
			var ips []netip.Addr
			for _, s := range req.PodIPs {
				ips = append(ips, netip.MustParseAddr(s))
			}
			var cov iptables.Coverage
			cov, err = iptables.CheckCoverage(ifaces, ips)
			for _, u := range cov.Uncovered {
				res.Uncovered = append(res.Uncovered, u.IP.String()+" "+u.Interface)
			}
			for _, a := range cov.Unroutable {
				res.Unroutable = append(res.Unroutable, a.String())
			}
		case "monitor":
			mctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Monitor(mctx, req.MonitorInterval) }()
			fmt.Println("monitoring")
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
			err = <-done
		default:
			err = fmt.Errorf("unknown op %q", op)
		}
		if err != nil {
			o.Err = err.Error()
		}
		res.Ops = append(res.Ops, o)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "kube2ra_iptables_restores_total":
				res.Restores = m.GetCounter().GetValue()
			case "kube2ra_iptables_rules_present":
				res.Present = m.GetGauge().GetValue()
			}
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// ---- harness ----

func randomID(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// run runs a command with a bounded time and fails the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryRun(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// node is the node namespace with HOST_IP, the server and the pods.
type node struct {
	t      *testing.T
	ns     string
	prefix string
	id     string
	mode   iptables.Mode
	ipv6   bool
	pods   int
	extra  []string // extra environment for rules helpers
}

func newNode(t *testing.T, mode iptables.Mode, ipv6 bool) *node {
	t.Helper()
	return newNodeNamed(t, netnsPrefix, mode, ipv6)
}

// newNodeNamed is newNode with the namespaces named prefix<id>-...
func newNodeNamed(t *testing.T, prefix string, mode iptables.Mode, ipv6 bool) *node {
	t.Helper()
	n := &node{t: t, prefix: prefix, id: randomID(t), mode: mode, ipv6: ipv6}
	n.ns = prefix + n.id + "-n"
	run(t, "ip", "netns", "add", n.ns)
	t.Cleanup(func() {
		if out, err := tryRun("ip", "netns", "del", n.ns); err != nil {
			t.Errorf("deleting netns %s: %v %s", n.ns, err, out)
		}
	})
	n.ip("link", "set", "lo", "up")
	// A bridge without ports stands in for the node NIC: this kernel may lack
	// the dummy driver, and a bridge is built in wherever veth is.
	n.ip("link", "add", "k2rhost", "type", "bridge")
	n.ip("addr", "add", hostIP+"/32", "dev", "k2rhost")
	addrs := []string{netip.AddrPortFrom(netip.MustParseAddr(hostIP), appPort).String()}
	if ipv6 {
		n.ip("addr", "add", hostIPv6+"/128", "dev", "k2rhost", "nodad")
		addrs = append(addrs, netip.AddrPortFrom(netip.MustParseAddr(hostIPv6), appPort).String())
	}
	n.ip("link", "set", "k2rhost", "up")
	n.startServer(n.ns, strings.Join(addrs, ","))
	return n
}

func (n *node) ip(args ...string) {
	n.t.Helper()
	run(n.t, "ip", append([]string{"-n", n.ns}, args...)...)
}

// startServer runs the HTTP server in namespace ns until the test ends.
func (n *node) startServer(ns, addrs string) {
	t := n.t
	t.Helper()
	cmd := nsHelperCmd(context.Background(), ns, "serve", "K2R_IPT_ADDRS="+addrs)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("server did not start: %q %s", line, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("server did not start within 5s: %s", stderr.String())
	}
}

// helperCmd re-executes this test binary in the node namespace.
func (n *node) helperCmd(ctx context.Context, mode string, env ...string) *exec.Cmd {
	return nsHelperCmd(ctx, n.ns, mode, env...)
}

func nsHelperCmd(ctx context.Context, ns, mode string, env ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, self)
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	return cmd
}

// pod is a pod namespace behind one node interface.
type pod struct {
	ns        string
	nodeIface string
	ipv6      bool
}

// addPod creates a pod namespace whose veth peer in the node is nodeIface.
func (n *node) addPod(nodeIface string) *pod {
	t := n.t
	t.Helper()
	n.pods++
	i := n.pods
	p := &pod{ns: fmt.Sprintf("%s%s-p%d", n.prefix, n.id, i), nodeIface: nodeIface, ipv6: n.ipv6}
	run(t, "ip", "netns", "add", p.ns)
	t.Cleanup(func() {
		if out, err := tryRun("ip", "netns", "del", p.ns); err != nil {
			t.Errorf("deleting netns %s: %v %s", p.ns, err, out)
		}
	})
	n.ip("link", "add", nodeIface, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
	n.ip("addr", "add", fmt.Sprintf("10.199.%d.1/24", i), "dev", nodeIface)
	n.ip("link", "set", nodeIface, "up")
	pip := func(args ...string) { run(t, "ip", append([]string{"-n", p.ns}, args...)...) }
	pip("link", "set", "lo", "up")
	pip("addr", "add", fmt.Sprintf("10.199.%d.2/24", i), "dev", "eth0")
	if n.ipv6 {
		n.ip("addr", "add", fmt.Sprintf("fd00:199:%d::1/64", i), "dev", nodeIface, "nodad")
		pip("addr", "add", fmt.Sprintf("fd00:199:%d::2/64", i), "dev", "eth0", "nodad")
	}
	pip("link", "set", "eth0", "up")
	pip("route", "add", "default", "via", fmt.Sprintf("10.199.%d.1", i))
	if n.ipv6 {
		pip("-6", "route", "add", "default", "via", fmt.Sprintf("fd00:199:%d::1", i))
	}
	return p
}

// get asks the metadata address from the pod; nil error means the node's
// server answered. elapsed is how long a failed request took inside the pod.
func (p *pod) get(url string) (elapsed time.Duration, err error) {
	_, elapsed, err = p.answer(url)
	return elapsed, err
}

// answer is get with the answering server's local address (HOST_IP:port
// when DNATed, the metadata address when not).
func (p *pod) answer(url string) (local string, elapsed time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := nsHelperCmd(ctx, p.ns, "dial", "K2R_IPT_URL="+url).CombinedOutput()
	if err != nil {
		var d time.Duration
		if f := strings.Fields(string(out)); len(f) > 1 && f[0] == "ERR" {
			d, _ = time.ParseDuration(f[1])
		}
		return "", d, fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != serverBody {
		return "", 0, fmt.Errorf("answered by something else: %q", out)
	}
	return f[1], 0, nil
}

const (
	metadataURL   = "http://169.254.169.254/latest/meta-data/"
	metadataURLv6 = "http://[fd00:ec2::254]/latest/meta-data/"
)

// expectReach checks all pods concurrently so unreachable ones cost one
// dial timeout in total.
func expectReach(t *testing.T, url string, want map[*pod]bool) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	for p, reach := range want {
		wg.Go(func() {
			elapsed, err := p.get(url)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case reach && err != nil:
				problems = append(problems, fmt.Sprintf("pod behind %s cannot reach %s: %v", p.nodeIface, url, err))
			case !reach && err == nil:
				problems = append(problems, fmt.Sprintf("pod behind %s reached the server via %s, want no answer", p.nodeIface, url))
			case !reach && elapsed > dialTimeout+500*time.Millisecond:
				problems = append(problems, fmt.Sprintf("pod behind %s took %s to fail, want about %s", p.nodeIface, elapsed, dialTimeout))
			}
		})
	}
	wg.Wait()
	for _, pr := range problems {
		t.Error(pr)
	}
}

// rules runs the package's verbs in the node namespace.
func (n *node) rules(req helperRequest) (helperResult, string) {
	t := n.t
	t.Helper()
	n.fillRequest(&req)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	b, _ := json.Marshal(req)
	cmd := n.helperCmd(ctx, "rules", append([]string{"K2R_IPT_REQUEST=" + string(b)}, n.extra...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rules helper %v: %v\n%s", req.Ops, err, stderr.String())
	}
	var res helperResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("rules helper printed %q: %v\n%s", out, err, stderr.String())
	}
	return res, stderr.String()
}

func (n *node) fillRequest(req *helperRequest) {
	if req.Mode == "" {
		req.Mode = string(n.mode)
	}
	if req.HostIP == "" {
		req.HostIP = hostIP
	}
	if req.Port == 0 {
		req.Port = appPort
	}
	if n.ipv6 && !req.IPv6Guard {
		req.IPv6, req.HostIPv6 = true, hostIPv6
	}
}

// mustOps runs verbs and fails on any error.
func (n *node) mustOps(ifaces string, ops ...string) []opResult {
	n.t.Helper()
	res, logs := n.rules(helperRequest{Interfaces: ifaces, Ops: ops})
	if res.NewErr != "" {
		n.t.Fatalf("New: %s\n%s", res.NewErr, logs)
	}
	for _, o := range res.Ops {
		if o.Err != "" {
			n.t.Fatalf("%s: %s\n%s", o.Op, o.Err, logs)
		}
	}
	return res.Ops
}

// ipt runs the backend's iptables in the node namespace (to set up states).
func (n *node) ipt(family string, args ...string) {
	n.t.Helper()
	bin := "iptables-" + string(n.mode)
	if family == "6" {
		bin = "ip6tables-" + string(n.mode)
	}
	run(n.t, "ip", append([]string{"netns", "exec", n.ns, bin, "-w"}, args...)...)
}

// save returns `iptables-save -t nat` of the backend, normalised: comments,
// table and COMMIT lines and counters dropped, everything else verbatim.
func (n *node) save(family string) string {
	n.t.Helper()
	return n.saveTable(family, "nat")
}

// saveTable is save for any table.
func (n *node) saveTable(family, table string) string {
	n.t.Helper()
	bin := "iptables-" + string(n.mode) + "-save"
	if family == "6" {
		bin = "ip6tables-" + string(n.mode) + "-save"
	}
	return normaliseSave(run(n.t, "ip", "netns", "exec", n.ns, bin, "-t", table))
}

func normaliseSave(out string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "", strings.HasPrefix(line, "#"), strings.HasPrefix(line, "*"), line == "COMMIT":
			continue
		case strings.HasPrefix(line, ":"):
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i]
			}
		case strings.HasPrefix(line, "["):
			if i := strings.Index(line, "] "); i > 0 {
				line = line[i+2:]
			}
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

const builtinChains = ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"

// wantSave is the normalised nat table with exactly kube2ra's rules for
// the given DNAT targets and interface entries.
func wantSave(family, target string, ifaces ...string) string {
	meta := "169.254.169.254/32"
	if family == "6" {
		meta = "fd00:ec2::254/128"
	}
	s := builtinChains + ":KUBE2RA -\n" +
		"-A PREROUTING -d " + meta + " -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA\n"
	for _, in := range ifaces {
		match := "-i " + in
		if rest, ok := strings.CutPrefix(in, "!"); ok {
			match = "! -i " + rest
		}
		s += "-A KUBE2RA -d " + meta + " " + match + " -p tcp -m tcp --dport 80 -j DNAT --to-destination " + target + "\n"
	}
	return s
}

// builtinFilterChains is an empty filter table.
const builtinFilterChains = ":INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n"

// wantGuardSave is the normalised filter table with exactly kube2ra's
// guard for the given interface entries.
func wantGuardSave(family string, ifaces ...string) string {
	meta := "169.254.169.254/32"
	if family == "6" {
		meta = "fd00:ec2::254/128"
	}
	jump := " -d " + meta + " -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-GUARD\n"
	s := builtinFilterChains + ":KUBE2RA-GUARD -\n-A INPUT" + jump + "-A FORWARD" + jump + "-A KUBE2RA-GUARD -i lo -j RETURN\n"
	for _, in := range ifaces {
		match := "-i " + in
		if rest, ok := strings.CutPrefix(in, "!"); ok {
			match = "! -i " + rest
		}
		s += "-A KUBE2RA-GUARD -d " + meta + " " + match + " -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n"
	}
	return s + "-A KUBE2RA-GUARD -d " + meta + " -p tcp -m tcp --dport 80 -m addrtype ! --dst-type LOCAL -j REJECT --reject-with tcp-reset\n"
}

func expectSave(t *testing.T, n *node, family, want string) {
	t.Helper()
	if got := n.save(family); got != want {
		t.Errorf("iptables-save -t nat (IPv%s, %s):\n%s\nwant:\n%s", family, n.mode, got, want)
	}
}

func expectGuardSave(t *testing.T, n *node, family, want string) {
	t.Helper()
	if got := n.saveTable(family, "filter"); got != want {
		t.Errorf("iptables-save -t filter (IPv%s, %s):\n%s\nwant:\n%s", family, n.mode, got, want)
	}
}

// eachBackend runs a test once per iptables backend, both at once.
func eachBackend(t *testing.T, f func(t *testing.T, mode iptables.Mode)) {
	modes := []iptables.Mode{iptables.ModeNFT, iptables.ModeLegacy}
	concurrently(t, len(modes), func(i int) string { return string(modes[i]) }, func(t *testing.T, i int) { f(t, modes[i]) })
}

// concurrently runs n subtests at the same time. The tests mostly wait for
// dial timeouts and iptables, so they overlap well; t.Parallel would cap
// them at GOMAXPROCS (2 here) and double the suite's time.
func concurrently(t *testing.T, n int, name func(int) string, f func(t *testing.T, i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { t.Run(name(i), func(t *testing.T) { f(t, i) }) })
	}
	wg.Wait()
}
