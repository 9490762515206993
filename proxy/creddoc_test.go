package proxy

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/k8s"
)

// logLines parses the JSON log lines written so far.
func logLines(t *testing.T, e *testEnv) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// credentialLines counts the credential route's lines at level.
func credentialLines(t *testing.T, e *testEnv, level string) []map[string]any {
	var out []map[string]any
	for _, l := range logLines(t, e) {
		if l["route"] == routeCredentials && l["level"] == level {
			out = append(out, l)
		}
	}
	return out
}

func TestCredentialReadsAreLoggedAtInfoOncePerPodAndCredential(t *testing.T) {
	log := logrus.New()
	e := newTestEnv(t, Options{Logger: log})
	log.SetOutput(e.logs)
	log.SetFormatter(&logrus.JSONFormatter{})
	url := e.url + "/latest/meta-data/iam/security-credentials/" + testRoleName
	get := func() {
		t.Helper()
		if status, _, _ := httpGet(t, url, nil); status != 200 {
			t.Fatalf("status %d, want 200", status)
		}
	}

	for range 5 {
		get()
	}
	info := credentialLines(t, e, "info")
	if len(info) != 1 {
		t.Fatalf("%d info lines for 5 reads of one credential by one pod, want 1:\n%s", len(info), e.logs.String())
	}
	c := testCredentials()
	if info[0]["msg"] != "credentials served to pod" || info[0]["access_key_id"] != c.AccessKeyID ||
		info[0]["pod"] != "app-7d9f" || info[0]["expiration"] != c.Expiration.Format(time.RFC3339) {
		t.Errorf("first read's line = %v", info[0])
	}

	// A refreshed credential is news: one more info line.
	refreshed := testCredentials()
	refreshed.AccessKeyID = "ASIAPODROLE000TEST02"
	e.creds.mu.Lock()
	e.creds.creds = refreshed
	e.creds.mu.Unlock()
	get()
	get()
	if n := len(credentialLines(t, e, "info")); n != 2 {
		t.Errorf("%d info lines after a refresh, want 2", n)
	}

	// At debug, every read has its line.
	log.SetLevel(logrus.DebugLevel)
	get()
	if n := len(credentialLines(t, e, "debug")); n != 1 {
		t.Errorf("%d debug lines for a repeat read at debug level, want 1", n)
	}
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken, refreshed.SecretAccessKey} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the log contains a secret")
		}
	}
}

func TestRefusalsAreLoggedEveryTime(t *testing.T) {
	e := newTestEnv(t, Options{})
	for range 3 {
		httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/not-my-role", nil)
	}
	n := 0
	for _, l := range logLines(t, e) {
		if l["reason"] == reasonRoleNameMismatch && l["level"] == "warning" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d warning lines for 3 refused reads, want 3:\n%s", n, e.logs.String())
	}
}

// imdsCredentials is the IMDS credential document, decoded.
type imdsCredentials struct {
	Code            string `json:"Code"`
	LastUpdated     string `json:"LastUpdated"`
	Type            string `json:"Type"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
	AccountID       string `json:"AccountId,omitempty"`
}

func TestCredentialDocuments(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	d := newCredentialDocs(clk)
	c := testCredentials()
	decode := func(body []byte) imdsCredentials {
		t.Helper()
		var doc imdsCredentials
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}

	doc, first, err := d.document(c, "pod-a")
	if err != nil || !first {
		t.Fatalf("first document: first=%v err=%v", first, err)
	}
	body := doc.body
	if got := doc.contentLength; len(got) != 1 || got[0] != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q for a %d-byte document", got, len(body))
	}
	if doc := decode(body); doc.Token != c.SessionToken || doc.AccessKeyID != c.AccessKeyID {
		t.Fatalf("document %+v does not carry the credentials", doc)
	}
	if _, first, _ := d.document(c, "pod-a"); first {
		t.Error("a second read by the same pod is reported as its first")
	}
	if _, first, _ := d.document(c, "pod-b"); !first {
		t.Error("another pod's first read of a shared credential is not reported as its first")
	}

	// Same key ID, new token (a getter that reuses key IDs): never the old body.
	rotated := c
	rotated.SessionToken = "IQoJb3JpZ2luX2VjERotatedToken//+test=="
	doc, first, _ = d.document(rotated, "pod-a")
	body = doc.body
	if doc := decode(body); doc.Token != rotated.SessionToken {
		t.Errorf("served token %q after the credential changed under the same key ID", doc.Token)
	}
	if !first {
		t.Error("a changed credential is not news to the pod")
	}

	// Without LastUpdated, the first encoding's stamp is kept, not renewed.
	unstamped := c
	unstamped.AccessKeyID, unstamped.LastUpdated = "ASIAUNSTAMPED0000001", time.Time{}
	b1, _, _ := d.document(unstamped, "pod-a")
	clk.SetTime(clk.Now().Add(time.Minute))
	b2, first, _ := d.document(unstamped, "pod-a")
	if string(b1.body) != string(b2.body) || first {
		t.Errorf("an unstamped credential was re-encoded (first=%v):\n%s\n%s", first, b1.body, b2.body)
	}
}

func TestCredentialDocumentsStayBounded(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	d := newCredentialDocs(clk)
	c := testCredentials()
	for i := range 3 * maxCredentialDocs {
		c.AccessKeyID = "ASIA" + strings.Repeat("0", 8) + string(rune('A'+i%26)) + time.Duration(i).String()
		if _, _, err := d.document(c, "pod"); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			// Time passes: earlier credentials expire and are swept.
			clk.SetTime(clk.Now().Add(2 * time.Hour))
			c.Expiration = clk.Now().Add(time.Hour)
		}
	}
	if n := len(d.byKey); n > maxCredentialDocs {
		t.Errorf("%d documents cached, bound is %d", n, maxCredentialDocs)
	}
}

// The credential route is answered before the router; a pod still gets
// nothing for another pod's IP or a role name that is not its own.
func TestCredentialFastPathKeepsTheChecks(t *testing.T) {
	e := newTestEnv(t, Options{})
	e.pods.mu.Lock()
	e.pods.byIP = map[netip.Addr]*k8s.Pod{}
	e.pods.mu.Unlock()
	if status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/"+testRoleName, nil); status != 404 {
		t.Errorf("unknown caller: status %d, want 404", status)
	}
	req := rawRequest(t, e.addr, rawMethod("POST", "/latest/meta-data/iam/security-credentials/"+testRoleName))
	if req.status != 405 {
		t.Errorf("POST: status %d, want 405", req.status)
	}
}
