package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/syncbuf"
)

// prometheusScrapeInterval is short so a test sees a few scrapes (and
// therefore rates) within seconds.
const prometheusScrapeInterval = time.Second

// prometheusStartTimeout bounds the wait for /-/ready (a cold TSDB start
// takes about a second).
const prometheusStartTimeout = 30 * time.Second

// prometheusQueryTimeout bounds one query.
const prometheusQueryTimeout = 10 * time.Second

// ScrapeTarget is one agent Prometheus scrapes, with the labels the chart's
// ServiceMonitor and PodMonitor add by relabelling (node).
type ScrapeTarget struct {
	// Address is host:port of the agent's metrics port.
	Address string
	// Labels are added to every series scraped from it.
	Labels map[string]string
}

// Prometheus is a real Prometheus server (Debian's prometheus package)
// scraping agents, for tests that query what a dashboard or alert would.
type Prometheus struct {
	// URL is the server's base URL on loopback.
	URL string
	// cmd is the running server.
	cmd *exec.Cmd
	// log holds its output, for failures.
	log *syncbuf.Buffer
	// done is closed when the process has exited.
	done chan struct{}
}

// StartPrometheus writes a configuration scraping targets every second as
// job "kube2ra" into dir, starts prometheus listening on a free loopback
// port, and waits until it is ready. It fails when prometheus is not on
// PATH: hack/install-test-deps.sh prometheus installs it.
func StartPrometheus(ctx context.Context, dir string, targets ...ScrapeTarget) (*Prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, fmt.Errorf("prometheus is not on PATH; run hack/install-test-deps.sh prometheus (Debian's prometheus package): %w", err)
	}
	type staticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels,omitempty"`
	}
	var statics []staticConfig
	for _, t := range targets {
		statics = append(statics, staticConfig{Targets: []string{t.Address}, Labels: t.Labels})
	}
	interval := prometheusScrapeInterval.String()
	config := map[string]any{
		"global": map[string]any{"scrape_interval": interval, "evaluation_interval": interval},
		"scrape_configs": []any{map[string]any{
			"job_name": "kube2ra", "metrics_path": "/metrics", "static_configs": statics,
		}},
	}
	// JSON is YAML: prometheus reads it as its configuration file.
	b, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, b, 0o644); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddress()
	if err != nil {
		return nil, err
	}
	p := &Prometheus{URL: "http://" + addr, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, prometheusStartTimeout)
	defer cancel()
	for {
		if code, _, err := Get(p.URL + "/-/ready"); err == nil && code == http.StatusOK {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("prometheus exited at start:\n%s", p.log.String())
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("prometheus was not ready within %s:\n%s", prometheusStartTimeout, p.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeLoopbackAddress asks the kernel for a free port on 127.0.0.1.
func freeLoopbackAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Stop ends the server and waits for it.
func (p *Prometheus) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Log is the server's output so far.
func (p *Prometheus) Log() string { return p.log.String() }

// Sample is one series of an instant query's result.
type Sample struct {
	// Labels are the series' labels.
	Labels map[string]string
	// Value is its value as Prometheus printed it ("NaN" included).
	Value string
}

// Query runs an instant query and returns its series; a PromQL error is an error.
func (p *Prometheus) Query(ctx context.Context, query string) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, prometheusQueryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("query %q: %d %s", query, res.StatusCode, strings.TrimSpace(string(body)))
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", query, out.Error)
	}
	if out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", query, out.Data.ResultType)
	}
	samples := make([]Sample, 0, len(out.Data.Result))
	for _, r := range out.Data.Result {
		s := Sample{Labels: r.Metric}
		if len(r.Value) == 2 {
			s.Value, _ = r.Value[1].(string)
		}
		samples = append(samples, s)
	}
	return samples, nil
}

// WaitForScrapes waits until every target has been scraped successfully at
// least n times in the last minute.
func (p *Prometheus) WaitForScrapes(ctx context.Context, targets, n int) error {
	query := fmt.Sprintf(`sum_over_time(up{job="kube2ra"}[1m]) >= %d`, n)
	var last error
	for {
		samples, err := p.Query(ctx, query)
		if err == nil && len(samples) == targets {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("prometheus did not scrape %d targets %d times: %w", targets, n, ctx.Err()), last)
		case <-time.After(prometheusScrapeInterval / 2):
		}
	}
}
