package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// KubeVersion is the kube-apiserver version hack/build-kube.sh
	// builds and Start looks for in the cache.
	KubeVersion = "v1.36.3"

	// DefaultStartTimeout bounds Start from launching etcd to /readyz ok. The
	// target is well under 15 s; the margin is for a loaded 2-core machine.
	DefaultStartTimeout = 90 * time.Second

	// AdminUser is the CN of the admin client certificate (group system:masters).
	AdminUser = "kube2ra-admin"

	// serviceAccountIssuer is the "iss" of service account tokens.
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	// serviceClusterIPRange is where Service cluster IPs come from; its first
	// address belongs to the "kubernetes" Service and to the serving cert.
	serviceClusterIPRange = "10.0.0.0/24"
	serviceClusterIP      = "10.0.0.1"

	// pollInterval is how often readiness is checked during Start.
	pollInterval = 50 * time.Millisecond
	// portAttempts bounds retries when a free port picked for a child process
	// is taken by someone else before the child binds it.
	portAttempts = 3

	installEtcdHint          = "apt-get install etcd-server or run hack/install-test-deps.sh"
	installKubeAPIServerHint = "run hack/install-test-deps.sh (make test-deps)"
)

// Options configures Start. The zero value is ready to use on a machine
// prepared by hack/install-test-deps.sh.
type Options struct {
	// KubeAPIServer is the kube-apiserver binary; default $KUBE_APISERVER,
	// else $KUBE2RA_CACHE (default ~/.cache/kube2ra)/kube-apiserver-v1.36.3.
	KubeAPIServer string
	// Etcd is the etcd binary; default: etcd on PATH.
	Etcd string
	// BindAddress is where both processes listen; default 127.0.0.1. Set it for
	// use inside a network namespace (it is also --advertise-address).
	BindAddress string
	// Log, when set, receives both processes' full output if Start fails.
	// Output is always kept in files under Dir, and the tail of the failing
	// process's log is part of every Start error.
	Log io.Writer
	// SecurePort is kube-apiserver's port; 0 picks a free one.
	SecurePort int
	// EtcdPort is etcd's client port; 0 picks a free one.
	EtcdPort int
	// StartTimeout bounds Start until /readyz is ok; default DefaultStartTimeout.
	StartTimeout time.Duration
	// Controllers also starts kube-controller-manager and kube-scheduler
	// (hack/build-kube.sh caches them beside kube-apiserver) and turns the
	// ServiceAccount admission plugin on, so DaemonSets, scheduling and
	// ServiceAccount tokens are real (the real-node tier). Its pod garbage
	// collector deletes pods bound to nodes without a Node object, so the
	// simulated-node tiers leave it off.
	Controllers bool
	// TempRoot is the parent of run directories; default
	// $TMPDIR/kube2ra-controlplane. Start removes directories (and kills the
	// process groups) left there by test processes that no longer run.
	TempRoot string
}

// ControlPlane is a running etcd and kube-apiserver pair. Its methods are safe
// for concurrent use.
type ControlPlane struct {
	// Dir is the run's temp directory: certificates, etcd data, logs.
	Dir string
	// Kubeconfig is the admin kubeconfig path (client cert in group system:masters).
	Kubeconfig string
	// StartupDuration is from launching etcd to kube-apiserver's /readyz ok.
	StartupDuration time.Duration
	// EtcdURL is etcd's client URL (plain HTTP on BindAddress).
	EtcdURL string

	url         string        // https://host:port of kube-apiserver
	ca          *authority    // signs user certificates
	admin       *rest.Config  // template for AdminConfig; copied on every call
	etcd        *process      // the etcd child
	apiserver   *process      // the kube-apiserver child
	controllers []*process    // kube-controller-manager and kube-scheduler (Options.Controllers)
	stopOnce    sync.Once     // makes Stop idempotent
	stopErr     error         // Stop's result, returned again on later calls
	userSerial  atomic.Uint64 // numbers the kubeconfig files UserKubeconfig writes

	restartMu       sync.Mutex        // serialises restarts with each other and with Stop
	apiserverBinary string            // the kube-apiserver binary, for restarts
	apiserverArgs   []string          // its flags (same port, same etcd), for restarts; rotations change its key flags
	startTimeout    time.Duration     // bounds waiting for /readyz after a restart
	saKey           ServiceAccountKey // the signing key Start created
	keySerial       atomic.Uint64     // numbers the key files NewServiceAccountKey writes
}

// ServiceAccountKey is a service account token key file under Dir.
type ServiceAccountKey struct {
	// Path is the PEM private key; kube-apiserver derives the public key from it.
	Path string
	// KeyID is the "kid" kube-apiserver puts in the tokens this key signs
	// and in its JWKS (/openid/v1/jwks).
	KeyID string
}

// Start launches etcd and kube-apiserver on free ports, waits for /readyz and
// returns the running control plane. The caller must call Stop. Start fails
// with an error that says what to do: how to install a missing binary, which
// port is taken, or the tail of a crashed process's log.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.TempRoot, 0o700); err != nil {
		return nil, fmt.Errorf("creating the control plane temp root %s: %w", opts.TempRoot, err)
	}
	cleanStaleRuns(opts.TempRoot)

	var lastErr error
	for attempt := 1; attempt <= portAttempts; attempt++ {
		cp, err := startOnce(ctx, opts)
		if err == nil {
			return cp, nil
		}
		lastErr = err
		// Only a race on a port we picked ourselves is worth another try.
		var inUse *portInUseError
		if !errors.As(err, &inUse) || !inUse.picked || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func (o Options) withDefaults() (Options, error) {
	if o.KubeAPIServer == "" {
		o.KubeAPIServer = DefaultKubeAPIServer()
	}
	if o.Etcd == "" {
		path, err := exec.LookPath("etcd")
		if err != nil {
			return o, fmt.Errorf("etcd is not on PATH: %s", installEtcdHint)
		}
		o.Etcd = path
	}
	if o.BindAddress == "" {
		o.BindAddress = "127.0.0.1"
	}
	if net.ParseIP(o.BindAddress) == nil {
		return o, fmt.Errorf("BindAddress %q is not an IP address; use one like 127.0.0.1", o.BindAddress)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.TempRoot == "" {
		o.TempRoot = filepath.Join(os.TempDir(), "kube2ra-controlplane")
	}
	for name, path := range map[string]string{"kube-apiserver": o.KubeAPIServer, "etcd": o.Etcd} {
		hint := installKubeAPIServerHint
		if name == "etcd" {
			hint = installEtcdHint
		}
		info, err := os.Stat(path)
		if err != nil {
			return o, fmt.Errorf("%s not found at %s: %s: %w", name, path, hint, err)
		}
		if info.IsDir() || info.Mode()&0o111 == 0 {
			return o, fmt.Errorf("%s at %s is not an executable file: %s", name, path, hint)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return o, fmt.Errorf("resolving the %s path %s: %w", name, path, err)
		}
		if name == "etcd" {
			o.Etcd = abs
		} else {
			o.KubeAPIServer = abs
		}
	}
	return o, nil
}

// DefaultKubeAPIServer is where Start looks for kube-apiserver when
// Options.KubeAPIServer is empty: $KUBE_APISERVER, else the cache that
// hack/build-kube.sh fills.
func DefaultKubeAPIServer() string {
	if p := os.Getenv("KUBE_APISERVER"); p != "" {
		return p
	}
	return filepath.Join(CacheDir(), "kube-apiserver-"+KubeVersion)
}

// CacheDir is $KUBE2RA_CACHE, else $XDG_CACHE_HOME/kube2ra, else
// ~/.cache/kube2ra — the same rule as the hack/ scripts.
func CacheDir() string {
	if d := os.Getenv("KUBE2RA_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(base, "kube2ra")
}

// portInUseError says a child process could not bind its port.
type portInUseError struct {
	process string // which child failed to bind
	addr    string // host:port it tried
	picked  bool   // true when Start chose the port (a race worth retrying)
	detail  string // log tail or the listen error
}

func (e *portInUseError) Error() string {
	if e.picked {
		return fmt.Sprintf("%s cannot listen on %s: the port is in use; free ports picked by Start were taken by another process "+
			"before %s bound them, %d times in a row (see who holds ports with `ss -ltnp`)\n%s",
			e.process, e.addr, e.process, portAttempts, e.detail)
	}
	return fmt.Sprintf("%s cannot listen on %s: the port is in use by another process "+
		"(see who holds it with `ss -ltnp 'sport = :%s'`, or leave the port option 0 to pick a free one)\n%s",
		e.process, e.addr, portOf(e.addr), e.detail)
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// startOnce makes one attempt with fresh ports and a fresh directory; on
// failure everything it started is stopped and removed.
func startOnce(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	dir, err := os.MkdirTemp(opts.TempRoot, "run-")
	if err != nil {
		return nil, fmt.Errorf("creating a run directory under %s: %w", opts.TempRoot, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(ownerRecord()+"\n"), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("writing the owner file in %s: %w", dir, err)
	}
	cp := &ControlPlane{Dir: dir}
	defer func() {
		if err != nil {
			if opts.Log != nil {
				cp.copyLogs(opts.Log)
			}
			_ = cp.Stop()
		}
	}()

	etcdPort, etcdPicked, err := choosePort(opts.BindAddress, opts.EtcdPort, "etcd")
	if err != nil {
		return nil, err
	}
	peerPort, _, err := choosePort(opts.BindAddress, 0, "etcd peer")
	if err != nil {
		return nil, err
	}
	securePort, securePicked, err := choosePort(opts.BindAddress, opts.SecurePort, "kube-apiserver")
	if err != nil {
		return nil, err
	}
	host := opts.BindAddress
	cp.EtcdURL = "http://" + net.JoinHostPort(host, strconv.Itoa(etcdPort))
	cp.url = "https://" + net.JoinHostPort(host, strconv.Itoa(securePort))

	files, err := cp.writeCredentials(host)
	if err != nil {
		return nil, err
	}

	begin := time.Now()
	deadline := begin.Add(opts.StartTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	peerURL := "http://" + net.JoinHostPort(host, strconv.Itoa(peerPort))
	cp.etcd, err = startProcess("etcd", opts.Etcd, []string{
		"--name=kube2ra-test",
		"--data-dir=" + filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=" + cp.EtcdURL,
		"--advertise-client-urls=" + cp.EtcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kube2ra-test=" + peerURL,
		"--initial-cluster-state=new",
		// Tests write little and never need the history.
		"--snapshot-count=10000",
		"--quota-backend-bytes=" + strconv.Itoa(2<<30),
	}, dir, filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	if err := waitEtcd(ctx, cp.etcd, cp.EtcdURL, etcdPicked, net.JoinHostPort(host, strconv.Itoa(etcdPort)), opts.StartTimeout); err != nil {
		return nil, err
	}

	cp.apiserverBinary, cp.startTimeout = opts.KubeAPIServer, opts.StartTimeout
	cp.apiserverArgs = []string{
		"--etcd-servers=" + cp.EtcdURL,
		"--bind-address=" + host,
		"--advertise-address=" + host,
		"--secure-port=" + strconv.Itoa(securePort),
		"--tls-cert-file=" + files.servingCert,
		"--tls-private-key-file=" + files.servingKey,
		"--client-ca-file=" + files.caCert,
		"--authorization-mode=Node,RBAC",
		"--anonymous-auth=false",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + files.saKey,
		"--service-account-signing-key-file=" + files.saKey,
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--allow-privileged=true",
		// A node reaches the kubelet by the address it registers.
		"--kubelet-preferred-address-types=InternalIP",
	}
	if !opts.Controllers {
		// No controller-manager runs, so nothing creates the "default"
		// ServiceAccount the admission plugin would require for every pod.
		cp.apiserverArgs = append(cp.apiserverArgs, "--disable-admission-plugins=ServiceAccount")
	}
	if net.ParseIP(host).IsLoopback() {
		// A loopback advertise address is not a valid Endpoints address;
		// nothing here needs the "kubernetes" Service's endpoints.
		cp.apiserverArgs = append(cp.apiserverArgs, "--endpoint-reconciler-type=none")
	}
	cp.apiserver, err = startProcess("kube-apiserver", cp.apiserverBinary, cp.apiserverArgs, dir, filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx, securePicked, opts.StartTimeout); err != nil {
		return nil, err
	}
	if opts.Controllers {
		if err := cp.startControllers(files); err != nil {
			return nil, err
		}
	}
	cp.StartupDuration = time.Since(begin)
	return cp, nil
}

// startControllers starts kube-controller-manager and kube-scheduler with the
// admin kubeconfig. Neither serves HTTPS (--secure-port=0): nothing probes them.
func (cp *ControlPlane) startControllers(files credentialFiles) error {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{
			"--service-account-private-key-file=" + files.saKey,
			"--root-ca-file=" + files.caCert,
			"--cluster-signing-cert-file=" + files.caCert,
			"--cluster-signing-key-file=" + filepath.Join(cp.Dir, "ca.key"),
		}},
		{"kube-scheduler", nil},
	} {
		binary := filepath.Join(filepath.Dir(cp.apiserverBinary), c.name+"-"+KubeVersion)
		if _, err := os.Stat(binary); err != nil {
			return fmt.Errorf("%s not found at %s: run hack/install-test-deps.sh kube-node: %w", c.name, binary, err)
		}
		args := append([]string{"--kubeconfig=" + cp.Kubeconfig, "--leader-elect=false", "--secure-port=0"}, c.args...)
		p, err := startProcess(c.name, binary, args, cp.Dir, filepath.Join(cp.Dir, c.name+".log"))
		if err != nil {
			return err
		}
		cp.controllers = append(cp.controllers, p)
	}
	return nil
}

// choosePort returns the requested port after checking it is free, or a free
// one picked by the kernel. picked says which.
func choosePort(host string, requested int, what string) (port int, picked bool, err error) {
	addr := net.JoinHostPort(host, strconv.Itoa(requested))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if requested != 0 && errors.Is(err, syscall.EADDRINUSE) {
			return 0, false, &portInUseError{process: what, addr: addr, detail: err.Error()}
		}
		return 0, false, fmt.Errorf("finding a port for %s on %s: %w (is BindAddress an address of this network namespace, and is its interface up?)", what, host, err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, false, fmt.Errorf("releasing the probe listener on %s: %w", addr, err)
	}
	return port, requested == 0, nil
}

// credentialFiles are the paths kube-apiserver reads.
type credentialFiles struct {
	caCert      string // the CA that signs client certificates
	servingCert string // kube-apiserver's TLS certificate
	servingKey  string // and its key
	saKey       string // the service account signing key
}

// writeCredentials creates the CA, serving certificate, service account key
// and admin kubeconfig under cp.Dir.
func (cp *ControlPlane) writeCredentials(host string) (credentialFiles, error) {
	now := time.Now()
	ca, err := newAuthority(now)
	if err != nil {
		return credentialFiles{}, err
	}
	cp.ca = ca
	ips := []net.IP{net.ParseIP(host), net.ParseIP("127.0.0.1"), net.ParseIP(serviceClusterIP)}
	serving, err := ca.serving(now, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, ips)
	if err != nil {
		return credentialFiles{}, err
	}
	saKey, saKeyID, err := newServiceAccountKey()
	if err != nil {
		return credentialFiles{}, err
	}
	caKey, err := privateKeyPEM(ca.key)
	if err != nil {
		return credentialFiles{}, err
	}
	files := credentialFiles{
		caCert:      filepath.Join(cp.Dir, "ca.crt"),
		servingCert: filepath.Join(cp.Dir, "apiserver.crt"),
		servingKey:  filepath.Join(cp.Dir, "apiserver.key"),
		saKey:       filepath.Join(cp.Dir, "service-account.key"),
	}
	if err := writeFiles(map[string][]byte{
		files.caCert:                    ca.certPEM,
		filepath.Join(cp.Dir, "ca.key"): caKey,
		files.servingCert:               serving.certPEM,
		files.servingKey:                serving.keyPEM,
		files.saKey:                     saKey,
	}); err != nil {
		return credentialFiles{}, err
	}
	cp.saKey = ServiceAccountKey{Path: files.saKey, KeyID: saKeyID}
	admin, err := ca.client(now, AdminUser, []string{"system:masters"})
	if err != nil {
		return credentialFiles{}, err
	}
	cp.admin = cp.restConfig(admin)
	cp.Kubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.admin, AdminUser); err != nil {
		return credentialFiles{}, err
	}
	return files, nil
}

func (cp *ControlPlane) restConfig(kp keyPair) *rest.Config {
	return &rest.Config{
		Host: cp.url,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.ca.certPEM,
			CertData: kp.certPEM,
			KeyData:  kp.keyPEM,
		},
		// Tests create objects in bursts; client-go's default 5 QPS would
		// make them slow for no reason.
		QPS:   200,
		Burst: 400,
	}
}

// waitEtcd waits until etcd answers /health, or fails with its log tail.
func waitEtcd(ctx context.Context, p *process, url string, picked bool, addr string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	last := "no answer yet"
	for {
		if p.exited() {
			return processFailed(p, addr, picked)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if err != nil {
			return fmt.Errorf("building the etcd health request for %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"true"`) {
				return nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if p.exited() {
				return processFailed(p, addr, picked)
			}
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("start canceled while waiting for etcd at %s: %w", url, ctx.Err())
			}
			return fmt.Errorf("etcd at %s was not healthy within %s (the start timeout; last check: %s); its log ends with:\n%s",
				url, timeout, last, logTail(p.logPath))
		case <-p.done:
		case <-time.After(pollInterval):
		}
	}
}

// waitReady waits until kube-apiserver answers /readyz with 200 and the
// "default" namespace exists, or fails with the reason and the log tail.
func (cp *ControlPlane) waitReady(ctx context.Context, picked bool, timeout time.Duration) error {
	tlsConfig, err := rest.TLSConfigFor(cp.admin)
	if err != nil {
		return fmt.Errorf("building the admin TLS config: %w", err)
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	addr := strings.TrimPrefix(cp.url, "https://")
	last := "no answer yet"
	// /readyz first; then the "default" namespace, which the bootstrap
	// controller creates just after and tests commonly use.
	for _, check := range []string{"/readyz", "/api/v1/namespaces/default"} {
		for {
			if cp.apiserver.exited() {
				return processFailed(cp.apiserver, addr, picked)
			}
			ok, status := get(ctx, client, cp.url+check)
			if ok {
				break
			}
			last = check + ": " + status
			select {
			case <-ctx.Done():
				if cp.apiserver.exited() {
					return processFailed(cp.apiserver, addr, picked)
				}
				if errors.Is(ctx.Err(), context.Canceled) {
					return fmt.Errorf("start canceled while waiting for kube-apiserver at %s: %w", cp.url, ctx.Err())
				}
				return fmt.Errorf("kube-apiserver at %s was not ready within %s (the start timeout; last check %s); its log ends with:\n%s",
					cp.url, timeout, last, logTail(cp.apiserver.logPath))
			case <-cp.apiserver.done:
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}

// get reports whether url answered 200, and otherwise a short reason.
func get(ctx context.Context, client *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode == http.StatusOK {
		return true, ""
	}
	// /readyz lists failing checks as "[-]name failed"; keep just those.
	var failing []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "[-]") {
			failing = append(failing, strings.TrimSpace(line))
		}
	}
	if len(failing) == 0 {
		failing = []string{strings.TrimSpace(string(body))}
	}
	return false, fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.Join(failing, "; "))
}

// processFailed explains why a child exited during Start.
func processFailed(p *process, addr string, picked bool) error {
	tail := logTail(p.logPath)
	if strings.Contains(tail, "address already in use") {
		return &portInUseError{process: p.name, addr: addr, picked: picked,
			detail: "its log ends with:\n" + tail}
	}
	return fmt.Errorf("%s exited during start (%s); its log ends with:\n%s", p.name, p.describeExit(), tail)
}

// copyLogs writes both processes' full logs to w.
func (cp *ControlPlane) copyLogs(w io.Writer) {
	for _, p := range []*process{cp.etcd, cp.apiserver} {
		if p == nil {
			continue
		}
		fmt.Fprintf(w, "===== %s log (%s) =====\n", p.name, p.logPath)
		if f, err := os.Open(p.logPath); err == nil {
			_, _ = io.Copy(w, f)
			f.Close()
		}
	}
}

// Stop ends kube-apiserver and etcd (SIGTERM to each process group, SIGKILL
// after a grace period) and removes Dir. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		cp.restartMu.Lock()
		defer cp.restartMu.Unlock()
		var errs []error
		for _, p := range append(cp.controllers, cp.apiserver, cp.etcd) {
			if p == nil {
				continue
			}
			if err := p.stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if cp.Dir != "" {
			if err := os.RemoveAll(cp.Dir); err != nil {
				errs = append(errs, fmt.Errorf("removing the control plane directory %s: %w", cp.Dir, err))
			}
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// URL is kube-apiserver's https:// address.
func (cp *ControlPlane) URL() string { return cp.url }

// AdminConfig returns a new copy of the admin client configuration (client
// certificate in group system:masters), safe to modify.
func (cp *ControlPlane) AdminConfig() *rest.Config { return rest.CopyConfig(cp.admin) }

// UserConfig returns a client configuration authenticating as user in groups
// with a fresh client certificate signed by the control plane's CA. Without
// RBAC bindings such a user is forbidden everything but discovery.
func (cp *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	kp, err := cp.ca.client(time.Now(), user, groups)
	if err != nil {
		return nil, err
	}
	return cp.restConfig(kp), nil
}

// UserKubeconfig is UserConfig written as a kubeconfig file under Dir (for
// kubectl, helm or a kube2ra process). It returns the file's path.
func (cp *ControlPlane) UserKubeconfig(user string, groups ...string) (string, error) {
	cfg, err := cp.UserConfig(user, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, fmt.Sprintf("user-%d.kubeconfig", cp.userSerial.Add(1)))
	if err := writeKubeconfig(path, cfg, user); err != nil {
		return "", err
	}
	return path, nil
}

// writeKubeconfig writes cfg (host, CA, client certificate) as a kubeconfig
// with a single context.
func writeKubeconfig(path string, cfg *rest.Config, user string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kube2ra-test"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["kube2ra-test"] = &clientcmdapi.Context{Cluster: "kube2ra-test", AuthInfo: user}
	kc.CurrentContext = "kube2ra-test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing the kubeconfig %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// CACertPool returns a pool holding the control plane's CA, for clients that
// build their own TLS configuration.
func (cp *ControlPlane) CACertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(cp.ca.cert)
	return pool
}

// RestartAPIServer stops kube-apiserver (SIGTERM, as an upgrade or a crash
// loop does), leaves it down for downtime, and starts it again with the same
// flags, port, certificates and etcd data, so clients reconnect to the same
// URL and find their objects. It returns once /readyz answers 200 again.
// etcd keeps running throughout.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context, downtime time.Duration) error {
	cp.restartMu.Lock()
	defer cp.restartMu.Unlock()
	if err := cp.restartAPIServerLocked(ctx, downtime, cp.apiserverArgs); err != nil {
		return fmt.Errorf("RestartAPIServer: %w", err)
	}
	return nil
}

// ServiceAccountKey is the signing key Start created: the one kube-apiserver
// signs and verifies tokens with until RotateServiceAccountKeys changes it.
func (cp *ControlPlane) ServiceAccountKey() ServiceAccountKey { return cp.saKey }

// NewServiceAccountKey writes a new service account key file (ECDSA P-256,
// like Start's) under Dir for RotateServiceAccountKeys. kube-apiserver does
// not use it until then.
func (cp *ControlPlane) NewServiceAccountKey() (ServiceAccountKey, error) {
	pemKey, keyID, err := newServiceAccountKey()
	if err != nil {
		return ServiceAccountKey{}, err
	}
	path := filepath.Join(cp.Dir, fmt.Sprintf("service-account-%d.key", cp.keySerial.Add(1)))
	if err := writeFiles(map[string][]byte{path: pemKey}); err != nil {
		return ServiceAccountKey{}, err
	}
	return ServiceAccountKey{Path: path, KeyID: keyID}, nil
}

// RotateServiceAccountKeys restarts kube-apiserver as an operator rotating
// the token signer does: new tokens are signed with signing
// (--service-account-signing-key-file), and tokens verify, and /openid/v1/jwks
// publishes, with exactly the keys in verifying (--service-account-key-file,
// once per key). The usual rotation is two restarts: (new, old+new), then,
// once tokens signed by the old key have expired, (new, new). Otherwise as
// RestartAPIServer: same URL, etcd and data; later RestartAPIServer calls
// keep these keys. kube-controller-manager (Options.Controllers) keeps Start's
// key, which it only uses for legacy Secret-based tokens.
func (cp *ControlPlane) RotateServiceAccountKeys(ctx context.Context, downtime time.Duration, signing ServiceAccountKey, verifying ...ServiceAccountKey) error {
	if err := checkKeyFile(signing, "signing"); err != nil {
		return err
	}
	signingVerifies := false
	for _, k := range verifying {
		if err := checkKeyFile(k, "verifying"); err != nil {
			return err
		}
		signingVerifies = signingVerifies || k.Path == signing.Path
	}
	if !signingVerifies {
		return fmt.Errorf("RotateServiceAccountKeys: the signing key %s is not among the verifying keys, so the tokens it signs would not verify; "+
			"list it in verifying too (a rotation publishes the old and the new key first)", signing.Path)
	}
	cp.restartMu.Lock()
	defer cp.restartMu.Unlock()
	args := make([]string, 0, len(cp.apiserverArgs)+len(verifying))
	for _, a := range cp.apiserverArgs {
		if !strings.HasPrefix(a, "--service-account-key-file=") && !strings.HasPrefix(a, "--service-account-signing-key-file=") {
			args = append(args, a)
		}
	}
	args = append(args, "--service-account-signing-key-file="+signing.Path)
	for _, k := range verifying {
		args = append(args, "--service-account-key-file="+k.Path)
	}
	if err := cp.restartAPIServerLocked(ctx, downtime, args); err != nil {
		return fmt.Errorf("RotateServiceAccountKeys: %w", err)
	}
	return nil
}

// checkKeyFile says what is wrong with a key given to RotateServiceAccountKeys.
func checkKeyFile(k ServiceAccountKey, role string) error {
	if k.Path == "" {
		return fmt.Errorf("RotateServiceAccountKeys: a %s key has no Path; make keys with NewServiceAccountKey or take Start's from ServiceAccountKey", role)
	}
	if _, err := os.Stat(k.Path); err != nil {
		return fmt.Errorf("RotateServiceAccountKeys: the %s key file %s cannot be read (was the control plane stopped?): %w", role, k.Path, err)
	}
	return nil
}

// restartAPIServerLocked stops kube-apiserver, waits downtime and starts it
// with args; on success args become the flags of later restarts. The caller
// holds restartMu.
func (cp *ControlPlane) restartAPIServerLocked(ctx context.Context, downtime time.Duration, args []string) error {
	if cp.apiserver == nil || cp.apiserverBinary == "" {
		return errors.New("the control plane was not started by Start")
	}
	if err := cp.apiserver.stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("canceled while kube-apiserver was down (it stays down): %w", ctx.Err())
	case <-time.After(downtime):
	}
	p, err := startProcess("kube-apiserver", cp.apiserverBinary, args, cp.Dir, cp.apiserver.logPath)
	if err != nil {
		return err
	}
	cp.apiserver = p
	ctx, cancel := context.WithTimeout(ctx, cp.startTimeout)
	defer cancel()
	if err := cp.waitReady(ctx, false, cp.startTimeout); err != nil {
		return err
	}
	cp.apiserverArgs = args
	return nil
}
