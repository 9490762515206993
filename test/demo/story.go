package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/controlplane"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// The story's names.
const (
	// roleShopWeb is the one role the fake AWS hands out.
	roleShopWeb = "shop-web"
	// shopPolicy is the allowed-roles annotation of namespace shop.
	shopPolicy = `["shop-*"]`
	// roleKey and policyKey are kube2ra's (and kube2iam's) annotations.
	roleKey, policyKey = "iam.amazonaws.com/role", "iam.amazonaws.com/allowed-roles"
	// metadataURL is what every AWS SDK asks for credentials.
	metadataURL = "http://169.254.169.254"
	// listingPath lists the instance's (here: the pod's) role.
	listingPath = "/latest/meta-data/iam/security-credentials/"
	// nodeRoleName is the EC2 instance's own role in the fake metadata service.
	nodeRoleName = "node-instance-role"
)

// Bounds on waiting; each is far above what the step takes on 2 cores.
const (
	// startTimeout covers the API server, the fake AWS and the agent's readiness.
	startTimeout = 3 * time.Minute
	// liveChangeTimeout bounds how long a policy change may take to apply.
	liveChangeTimeout = 10 * time.Second
	// eventTimeout bounds how long the RoleDenied Event may take to appear.
	eventTimeout = 10 * time.Second
	// commandTimeout bounds one curl or kubectl run.
	commandTimeout = 30 * time.Second
	// pollInterval paces the waits above.
	pollInterval = 50 * time.Millisecond
)

// demo is one run of the story.
type demo struct {
	// out receives the story.
	out io.Writer
	// flavour is the node's credential source.
	flavour harness.Flavour
	// env is the running node, nil until step 1 succeeds.
	env *harness.Env
	// dir keeps the agent's log (kept after a failed run).
	dir string
	// logPath is the agent's log file.
	logPath string
	// checks counts the expected results looked at.
	checks int
	// failures names the expected results that were not met.
	failures []string
	// started is when the demo began.
	started time.Time
	// pods are the story's pods by namespace/name.
	pods map[string]*harness.Pod
}

// run tells the story and returns the process exit code.
func run(ctx context.Context, out io.Writer, flavour harness.Flavour, keep bool) int {
	d := &demo{out: out, flavour: flavour, started: time.Now(), pods: map[string]*harness.Pod{}}
	dir, err := os.MkdirTemp("", "kube2ra-demo-")
	if err != nil {
		fmt.Fprintln(out, "demo: cannot create a temp directory:", err)
		return 1
	}
	d.dir, d.logPath = dir, filepath.Join(dir, "agent.log")
	logFile, err := os.Create(d.logPath)
	if err != nil {
		fmt.Fprintln(out, "demo: cannot create the agent's log file:", err)
		return 1
	}
	defer logFile.Close()

	d.intro()
	if d.start(ctx, logFile) {
		for _, step := range []func(context.Context) error{d.allowed, d.denied, d.liveChange, d.noRole} {
			if err := step(ctx); err != nil {
				d.fail("the story could not go on: %v", err)
				break
			}
		}
	}
	if ctx.Err() != nil {
		d.fail("interrupted")
	}
	d.summary()
	if keep && d.env != nil && ctx.Err() == nil {
		for _, p := range d.pods {
			if err := exposeToHost(ctx, p); err != nil {
				fmt.Fprintf(d.out, "(pod %s/%s's network namespace is reachable only from inside the demo: %v)\n", p.Namespace, p.Name, err)
			}
		}
		d.howToGetIn()
		<-ctx.Done()
		fmt.Fprintln(d.out)
	}
	d.teardown(logFile)
	if len(d.failures) > 0 {
		return 1
	}
	_ = os.RemoveAll(d.dir)
	return 0
}

func (d *demo) intro() {
	source := `IAM Roles Anywhere, with one X.509 certificate for the whole node, as on a
machine outside AWS.`
	if d.flavour == harness.EC2 {
		source = `STS AssumeRole with the instance's own role, as on an EC2 instance.`
	}
	d.para(`kube2ra demo: every Kubernetes pod gets its own AWS IAM role.

A pod asks the instance metadata service (169.254.169.254) for credentials, as
every AWS SDK and the AWS CLI do on their own. On the node, an iptables rule
sends that request to kube2ra, which finds the pod by its IP address, checks
the role the pod asks for (pod annotation ` + roleKey + `) against its
namespace's policy (namespace annotation ` + policyKey + `), and
answers with credentials for that role only. Here they come from
` + source + `
Everything below is real except AWS, which is a local fake that checks
signatures and trust the way AWS does.`)
}

// start is step 1: the API server, the node with the agent, the fake AWS.
func (d *demo) start(ctx context.Context, agentLog io.Writer) bool {
	d.step(1, "Start a Kubernetes API server, a node running kube2ra, and a fake AWS")
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	began := time.Now()
	env, err := harness.Start(ctx, harness.Options{Flavour: d.flavour, Roles: []string{roleShopWeb}, Log: agentLog})
	if err != nil {
		d.fail("could not start: %v", err)
		return false
	}
	d.env = env
	d.ok("Kubernetes API server %s with etcd, at %s (ready in %s)", controlplane.KubeVersion, env.CP.URL(), round(env.CP.StartupDuration))
	switch d.flavour {
	case harness.RolesAnywhere:
		d.ok("fake IAM Roles Anywhere: it accepts only certificates that chain to the trust anchor, and signatures made with their key")
		d.say("      trust anchor  %s", harness.TrustAnchorARN)
		d.say("      profile       %s", harness.ProfileARN)
		d.say("                    may hand out role %s", harness.RoleARN(roleShopWeb))
	case harness.EC2:
		d.ok("fake EC2 metadata service at 169.254.169.254 on the node, with the instance's own role %s", nodeRoleName)
		d.say("      STS lets that role assume %s", harness.RoleARN(roleShopWeb))
	}
	d.say("    fake STS at %s: checks every request's SigV4 signature and tells who signed it", env.STSURL)
	how := "with the node's certificate and key"
	if d.flavour == harness.EC2 {
		how = "with the instance role from the metadata service"
	}
	d.ok("node %s (network namespace %s, IP %s) runs bin/kube2ra %s; all ready %s after the start", harness.NodeName, env.Node.Name, simnode.HostIP, how, round(time.Since(began)))
	rules := natRules()
	d.say("    iptables on the node (nat table):")
	d.output(strings.Join(rules, "\n"))
	target := fmt.Sprintf("--to-destination %s:%d", simnode.HostIP, harness.AppPort)
	d.check(containsAll(rules, "-d 169.254.169.254/32", "DNAT", target),
		fmt.Sprintf("pods' traffic to 169.254.169.254:80 goes to kube2ra on %s:%d", simnode.HostIP, harness.AppPort),
		"no DNAT rule for 169.254.169.254 to the agent")
	return true
}

// allowed is step 2: a pod whose namespace allows its role gets it.
func (d *demo) allowed(ctx context.Context) error {
	d.step(2, "A pod whose namespace allows the role it asks for")
	if err := d.env.CreateNamespace(ctx, "shop", shopPolicy); err != nil {
		return err
	}
	d.say("    namespace shop   %s: %s", policyKey, shopPolicy)
	p, err := d.createPod(ctx, "shop", "web", roleShopWeb)
	if err != nil {
		return err
	}
	d.say("    Inside the pod, with no AWS configuration at all:")
	code, body := d.curl(ctx, p, listingPath)
	d.check(code == 200 && strings.TrimSpace(body) == roleShopWeb,
		"the metadata service names the pod's role", fmt.Sprintf("want %s with HTTP 200, got HTTP %d", roleShopWeb, code))
	d.callerIdentity(ctx, p, roleShopWeb)
	return nil
}

// denied is step 3: a namespace that allows nothing refuses the role, and
// says why in an Event.
func (d *demo) denied(ctx context.Context) error {
	d.step(3, "A pod whose namespace does not allow the role it asks for")
	if err := d.env.CreateNamespace(ctx, "other", ""); err != nil {
		return err
	}
	d.say("    namespace other  no %s annotation: no role is allowed", policyKey)
	p, err := d.createPod(ctx, "other", "batch", roleShopWeb)
	if err != nil {
		return err
	}
	code, _ := d.curl(ctx, p, listingPath)
	d.check(code == 404, "refused: 404, as on an instance without a role", fmt.Sprintf("want HTTP 404, got HTTP %d", code))
	d.noCredentials(ctx, p)
	d.roleDeniedEvent(ctx, "other", "batch")
	return nil
}

// liveChange is step 4: the namespace's policy is changed while the pod runs.
func (d *demo) liveChange(ctx context.Context) error {
	d.step(4, "The namespace's policy changes while the pod keeps running")
	d.say("    $ kubectl annotate namespace other --overwrite %s='%s'   # the same update, through the API", policyKey, shopPolicy)
	p := d.pods["other/batch"]
	if p == nil {
		return errors.New("pod other/batch is gone")
	}
	changed := time.Now()
	if err := d.env.SetNamespacePolicy(ctx, "other", shopPolicy); err != nil {
		return err
	}
	deadline := time.Now().Add(liveChangeTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if code, _, _ := p.PodGet(ctx, listingPath, true); code == 200 {
			break
		}
		time.Sleep(pollInterval)
	}
	took := time.Since(changed)
	d.say("    The same pod, not restarted, asks again:")
	code, body := d.curl(ctx, p, listingPath)
	d.check(code == 200 && strings.TrimSpace(body) == roleShopWeb,
		fmt.Sprintf("pod other/batch (uid %s) now gets its role, %s after the change", p.Object.UID, round(took)),
		fmt.Sprintf("still HTTP %d %s after the change", code, round(took)))
	d.callerIdentity(ctx, p, roleShopWeb)
	return nil
}

// noRole is step 5: a pod without a role gets nothing, never the node's.
func (d *demo) noRole(ctx context.Context) error {
	d.step(5, "A pod that asks for no role")
	p, err := d.createPod(ctx, "shop", "tools", "")
	if err != nil {
		return err
	}
	code, _ := d.curl(ctx, p, listingPath)
	d.check(code == 404, "no role listed (404), as on an instance without a role", fmt.Sprintf("want HTTP 404, got HTTP %d", code))
	if d.flavour == harness.EC2 {
		code, _ := d.curl(ctx, p, listingPath+nodeRoleName)
		d.check(code == 404, "the instance's own role is out of the pod's reach", fmt.Sprintf("the node's role answered HTTP %d", code))
	}
	d.noCredentials(ctx, p)
	return nil
}

func (d *demo) createPod(ctx context.Context, namespace, name, role string) (*harness.Pod, error) {
	var ann map[string]string
	what := "no " + roleKey + " annotation"
	if role != "" {
		ann = map[string]string{roleKey: role}
		what = roleKey + ": " + role
	}
	p, err := d.env.CreatePod(ctx, harness.PodSpec{Namespace: namespace, Name: name, Annotations: ann})
	if err != nil {
		return nil, err
	}
	d.pods[namespace+"/"+name] = p
	d.say("    pod %-12s %s   (IP %s, network namespace %s)", namespace+"/"+name, what, p.Net.IP, p.Net.Netns)
	return p, nil
}

// tokenCommand is the IMDSv2 token PUT as printed; kube2ra refuses
// token-less reads by default (--imdsv2-required), as IMDS does.
const tokenCommand = `TOKEN=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' ` + metadataURL + `/latest/api/token)`

// curl runs curl in the pod exactly as printed (a token PUT, then the GET
// with it) and returns the HTTP status and body (status 0 when nothing answered).
func (d *demo) curl(ctx context.Context, p *harness.Pod, path string) (int, string) {
	d.say("    $ %s", tokenCommand)
	d.say("    $ curl -s -H \"X-aws-ec2-metadata-token: $TOKEN\" %s%s", metadataURL, path)
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	script := tokenCommand + `; curl -s --max-time 5 -w '\n%{http_code}' -H "X-aws-ec2-metadata-token: $TOKEN" "$1"`
	cmd := p.Net.Command(ctx, "sh", "-c", script, "sh", metadataURL+path)
	cmd.Env = harness.CleanEnviron()
	out, err := cmd.Output()
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	var code int
	if i >= 0 {
		_, _ = fmt.Sscanf(s[i+1:], "%d", &code)
		s = s[:i]
	}
	if err != nil {
		d.output(fmt.Sprintf("(curl failed: %v)", err))
		return 0, ""
	}
	d.output(fmt.Sprintf("%s   ← HTTP %d", strings.TrimRight(s, "\n"), code))
	return code, s
}

// awsCommand is how the AWS CLI is shown; the endpoint is the fake STS.
func (d *demo) awsCommand() []string {
	return []string{"sts", "get-caller-identity", "--endpoint-url", d.env.STSURL}
}

// callerIdentity runs `aws sts get-caller-identity` in the pod and checks AWS
// saw the pod's role.
func (d *demo) callerIdentity(ctx context.Context, p *harness.Pod, role string) {
	d.say("    $ aws %s      # the fake STS", strings.Join(d.awsCommand(), " "))
	stdout, stderr, err := d.env.AWSCLI(ctx, p, d.awsCommand()...)
	d.output(strings.TrimSpace(stdout + stderr))
	want := ":assumed-role/" + role + "/"
	d.check(err == nil && strings.Contains(stdout, want),
		fmt.Sprintf("the AWS CLI found credentials by itself; AWS verified the signature and sees role %s", role),
		fmt.Sprintf("want an identity containing %q (%v)", want, err))
}

// noCredentials runs the AWS CLI in the pod and expects it to find none.
func (d *demo) noCredentials(ctx context.Context, p *harness.Pod) {
	d.say("    $ aws %s", strings.Join(d.awsCommand(), " "))
	stdout, stderr, err := d.env.AWSCLI(ctx, p, d.awsCommand()...)
	d.output(strings.TrimSpace(stdout + stderr))
	d.check(err != nil && strings.Contains(stderr, "Unable to locate credentials"),
		"the AWS CLI finds no credentials at all: no role, and never the node's",
		"the AWS CLI got credentials it must not have")
}

// roleDeniedEvent waits for kube2ra's RoleDenied Event on the pod and shows
// the namespace's Events as kubectl does.
func (d *demo) roleDeniedEvent(ctx context.Context, namespace, pod string) {
	d.say("    $ kubectl get events -n %s", namespace)
	deadline := time.Now().Add(eventTimeout)
	var found bool
	for !found && time.Now().Before(deadline) && ctx.Err() == nil {
		list, err := d.env.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, e := range list.Items {
				if e.Reason == k8s.ReasonRoleDenied && e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == pod {
					found = true
				}
			}
		}
		if !found {
			time.Sleep(pollInterval)
		}
	}
	d.output(d.events(ctx, namespace))
	d.check(found, "kube2ra said why, in a RoleDenied Event on the pod", fmt.Sprintf("no RoleDenied Event on pod %s/%s within %s", namespace, pod, eventTimeout))
}

// events is `kubectl get events -n namespace`, by the machine's kubectl when
// there is one, else the same table from client-go.
func (d *demo) events(ctx context.Context, namespace string) string {
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		ctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", d.env.CP.Kubeconfig, "get", "events", "-n", namespace).CombinedOutput()
		if err == nil {
			return string(out)
		}
	}
	list, err := d.env.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "(listing Events failed: " + err.Error() + ")"
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "LAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE")
	for _, e := range list.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", lastSeen(e), e.Type, e.Reason, strings.ToLower(e.InvolvedObject.Kind)+"/"+e.InvolvedObject.Name, e.Message)
	}
	_ = w.Flush()
	return b.String()
}

func lastSeen(e corev1.Event) string {
	t := e.LastTimestamp.Time
	if t.IsZero() {
		t = e.EventTime.Time
	}
	return duration.HumanDuration(time.Since(t))
}

func (d *demo) summary() {
	elapsed := round(time.Since(d.started))
	fmt.Fprintln(d.out)
	if len(d.failures) == 0 {
		fmt.Fprintf(d.out, "✔ All %d checks passed in %s: each pod got exactly the role its namespace allows, and nothing else.\n", d.checks, elapsed)
		return
	}
	fmt.Fprintf(d.out, "✘ %d of %d checks failed (%s):\n", len(d.failures), max(d.checks, len(d.failures)), elapsed)
	for _, f := range d.failures {
		fmt.Fprintf(d.out, "  - %s\n", f)
	}
	fmt.Fprintf(d.out, "The agent's log is kept in %s; its last lines:\n", d.logPath)
	if d.env != nil {
		d.output(d.env.Agent.LogTail(20))
	}
}

func (d *demo) howToGetIn() {
	e := d.env
	node := e.Node.Name
	web := d.pods["shop/web"]
	fmt.Fprintf(d.out, `
Everything keeps running. From another terminal, as root:

  Kubernetes (the API server listens inside the node's network namespace):
    ip netns exec %[1]s kubectl --kubeconfig %[2]s get pods -A
    ip netns exec %[1]s kubectl --kubeconfig %[2]s get events -A
`, node, e.CP.Kubeconfig)
	if web != nil {
		fmt.Fprintf(d.out, `
  Inside pod shop/web (network namespace %[1]s):
    ip netns exec %[1]s sh -c 'TOKEN=$(curl -s -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" %[2]s/latest/api/token); curl -s -H "X-aws-ec2-metadata-token: $TOKEN" %[2]s%[3]s'
    ip netns exec %[1]s env %[4]s %[5]s %[6]s
`, web.Net.Netns, metadataURL, listingPath, strings.Join(e.AWSCLIEnv(), " "), harness.DebianAWSCLI, strings.Join(d.awsCommand(), " "))
	}
	var others []string
	for _, k := range [][2]string{{"other", "batch"}, {"shop", "tools"}} {
		if p := d.pods[k[0]+"/"+k[1]]; p != nil {
			others = append(others, fmt.Sprintf("%s/%s is %s", k[0], k[1], p.Net.Netns))
		}
	}
	if len(others) > 0 {
		fmt.Fprintf(d.out, "  The other pods' network namespaces: %s\n", strings.Join(others, ", "))
	}
	fmt.Fprintf(d.out, `
  The agent (in the node's network namespace %[1]s):
    log      tail -f %[2]s
    metrics  ip netns exec %[1]s curl -s %[3]s/metrics | grep ^kube2ra_
    ready    ip netns exec %[1]s curl -s %[5]s/readyz
    pods     ip netns exec %[1]s curl -s %[5]s/debug/store
    rules    ip netns exec %[1]s iptables -t nat -S %[4]s

Press Ctrl-C to tear everything down.
`, node, d.logPath, e.Agent.MetricsURL, iptables.ChainKube2ra, e.Agent.NodeURL)
}

func (d *demo) teardown(agentLog io.Writer) {
	fmt.Fprint(d.out, "Tearing down: agent, iptables rules, pods, API server, fake AWS, network namespaces... ")
	if d.env != nil {
		// The agent keeps its rules on exit (fail closed, as in a rolling
		// update); remove them as `kube2ra cleanup` does, logging to its log.
		_ = d.env.Agent.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		logger := logrus.New()
		logger.SetOutput(agentLog)
		if err := iptables.RemoveAll(ctx, logger); err != nil {
			fmt.Fprintf(d.out, "\n  ✘ removing the iptables rules: %v\n", err)
		}
		cancel()
		d.env.Close()
	}
	fmt.Fprintln(d.out, "done.")
}

// natRules are the node's nat rules that mention kube2ra's chain, from
// whichever iptables backend holds them.
func natRules() []string {
	for _, bin := range []string{"iptables-nft", "iptables-legacy", "iptables"} {
		out, err := exec.Command(bin, "-t", "nat", "-S").Output()
		if err != nil {
			continue
		}
		var rules []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "-A") && strings.Contains(l, string(iptables.ChainKube2ra)) {
				rules = append(rules, l)
			}
		}
		if len(rules) > 0 {
			return rules
		}
	}
	return nil
}

func containsAll(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// Printing.

func (d *demo) para(text string) { fmt.Fprintln(d.out, text) }

func (d *demo) step(n int, title string) {
	fmt.Fprintf(d.out, "\n%d. %s\n", n, title)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

// output prints a command's output, indented under the command.
func (d *demo) output(text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	for _, l := range strings.Split(text, "\n") {
		fmt.Fprintf(d.out, "        %s\n", l)
	}
}

// ok prints ✔ and what was done (not counted as a check: failing to do it
// stops the story).
func (d *demo) ok(format string, args ...any) {
	fmt.Fprintf(d.out, "  ✔ "+format+"\n", args...)
}

// check prints ✔ and okMsg when ok, else ✘, okMsg and why, and counts it.
func (d *demo) check(ok bool, okMsg, why string) {
	d.checks++
	if ok {
		fmt.Fprintf(d.out, "  ✔ %s\n", okMsg)
		return
	}
	fmt.Fprintf(d.out, "  ✘ %s — NOT MET: %s\n", okMsg, why)
	d.failures = append(d.failures, okMsg+": "+why)
}

// fail records a failure that is not a check of the story.
func (d *demo) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(d.out, "  ✘ %s\n", msg)
	d.failures = append(d.failures, msg)
}

func round(t time.Duration) time.Duration {
	if t > 10*time.Second {
		return t.Round(time.Second)
	}
	return t.Round(10 * time.Millisecond)
}
