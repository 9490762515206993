// Command loadclient is one pod's steady metadata traffic in the soak. It
// runs inside the pod's network namespace (ip netns exec) and does what an
// application does: the SDK credential flow (list the role, fetch its
// credentials) with and without IMDSv2 tokens, on kept-alive and fresh
// connections, reads allowlisted paths, and tries forbidden ones. It checks
// every answer for the node's secrets and for its shape, and prints one
// wire.Result per request on stdout; the driver judges roles.
//
// With -slowloris N it instead holds N connections open, sending one byte a
// second, and prints a summary each second.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/soak/wire"
)

const (
	// metadataHost is what every pod calls.
	metadataHost = "169.254.169.254"
	// requestTimeout bounds one request, a little above what SDKs allow in
	// total, so slowness shows up as latency before it shows up as failure.
	requestTimeout = 3 * time.Second
	// tokenTTLSeconds is the TTL asked for; tokens are reused for half of it.
	tokenTTLSeconds = 60
	// credsPrefix is the credential route.
	credsPrefix = "/latest/meta-data/iam/security-credentials/"
	// slowReopenDelay spaces reconnects of a slowloris connection.
	slowReopenDelay = 200 * time.Millisecond
)

func main() {
	interval := flag.Duration("interval", 300*time.Millisecond, "pause between iterations")
	region := flag.String("region", "", "region the pass-through answers must name")
	marker := flag.String("marker", "", "string that marks the node's secrets")
	nodeKey := flag.String("node-key", "", "the node's own access key ID")
	roles := flag.String("roles", "", "comma list of every role name (foreign names are picked from it)")
	slow := flag.Int("slowloris", 0, "hold this many trickling connections instead of the normal load")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()

	out := &reporter{enc: json.NewEncoder(os.Stdout)}
	if *slow > 0 {
		slowloris(*slow, out)
		return
	}
	c := &client{
		out: out, region: *region, marker: *marker, nodeKey: *nodeKey,
		roles: strings.Split(*roles, ","),
		rnd:   rand.New(rand.NewPCG(*seed, uint64(os.Getpid()))),
		keep: &http.Client{Timeout: requestTimeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second,
		}},
		fresh: &http.Client{Timeout: requestTimeout, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	c.run(*interval)
}

// reporter writes results, one JSON line each, from any goroutine.
type reporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *reporter) report(res wire.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(res)
}

// client is the steady load of one pod.
type client struct {
	out                     *reporter
	region, marker, nodeKey string
	roles                   []string
	rnd                     *rand.Rand
	keep, fresh             *http.Client
	token                   string
	tokenAt                 time.Time
	iter                    int
}

// run loops until stdin closes; "pause" and "resume" lines control it.
func (c *client) run(interval time.Duration) {
	var paused atomic.Bool
	stop := make(chan struct{})
	pauseReq := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			switch strings.TrimSpace(sc.Text()) {
			case wire.Pause:
				paused.Store(true)
				pauseReq <- struct{}{}
			case wire.Resume:
				paused.Store(false)
			}
		}
		close(stop)
	}()
	for {
		select {
		case <-stop:
			return
		case <-pauseReq:
			c.keep.CloseIdleConnections()
			c.token = ""
			c.out.report(wire.Result{Kind: wire.KindPaused, Start: time.Now().UnixNano()})
			continue
		default:
		}
		if paused.Load() {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c.iteration()
		// Jitter keeps 30+ clients from marching in step.
		time.Sleep(interval/2 + time.Duration(c.rnd.Int64N(int64(interval))))
	}
}

// iteration is one round of the SDK flow plus, now and then, a pass-through
// and a forbidden request.
func (c *client) iteration() {
	c.iter++
	useToken := c.iter%2 == 0
	hc := c.keep
	if c.iter%3 == 0 {
		hc = c.fresh
	}
	tok := ""
	if useToken {
		var ok bool
		if tok, ok = c.sessionToken(hc); !ok {
			return
		}
	}
	res, body := c.get(hc, wire.KindList, credsPrefix, tok)
	if res.Status == http.StatusUnauthorized && tok != "" {
		// As the SDKs do: a refused token (the agent restarted, the token
		// expired) is dropped and the request retried once with a new one.
		c.out.report(res)
		c.token = ""
		var ok bool
		if tok, ok = c.sessionToken(hc); !ok {
			return
		}
		res, body = c.get(hc, wire.KindList, credsPrefix, tok)
	}
	name := strings.TrimSpace(body)
	if res.Status == http.StatusOK {
		res.RoleName = name
		if name == "" || strings.ContainsAny(name, "\n/") {
			res.Bad = "listing is not one role name"
		}
	}
	c.out.report(res)
	if res.Status == http.StatusOK && res.Bad == "" {
		c.creds(hc, wire.KindCreds, name, tok)
	}
	if c.iter%4 == 0 {
		c.pass(hc, tok)
	}
	if c.iter%5 == 0 {
		c.forbidden(tok, name)
	}
}

// sessionToken returns a token, minting one when the last is half-way to expiry.
func (c *client) sessionToken(hc *http.Client) (string, bool) {
	if c.token != "" && time.Since(c.tokenAt) < tokenTTLSeconds*time.Second/2 {
		return c.token, true
	}
	res := wire.Result{Kind: wire.KindToken, Path: "/latest/api/token", KeepAlive: hc == c.keep}
	req, _ := http.NewRequest(http.MethodPut, "http://"+metadataHost+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", fmt.Sprint(tokenTTLSeconds))
	body, ok := c.do(hc, req, &res)
	if ok && res.Status == http.StatusOK {
		if resp := strings.TrimSpace(body); resp == "" {
			res.Bad = "empty token"
		} else {
			c.token, c.tokenAt = resp, time.Now()
		}
	}
	c.out.report(res)
	return c.token, res.Status == http.StatusOK && res.Bad == ""
}

// get issues a GET and fills the common fields.
func (c *client) get(hc *http.Client, kind, path, tok string) (wire.Result, string) {
	res := wire.Result{Kind: kind, Path: path, Token: tok != "", KeepAlive: hc == c.keep}
	req, _ := http.NewRequest(http.MethodGet, "http://"+metadataHost+path, nil)
	if tok != "" {
		req.Header.Set("X-aws-ec2-metadata-token", tok)
	}
	body, _ := c.do(hc, req, &res)
	return res, body
}

// do runs req, records status, timing, error class and leaks.
func (c *client) do(hc *http.Client, req *http.Request, res *wire.Result) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	res.Start = time.Now().UnixNano()
	resp, err := hc.Do(req.WithContext(ctx))
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		res.Status = resp.StatusCode
	}
	res.End = time.Now().UnixNano()
	if err != nil {
		res.Status = 0
		res.Err, res.ErrText = classify(err), err.Error()
		return "", false
	}
	res.Leak = wire.LeakIn(string(body), c.marker, c.nodeKey)
	return string(body), true
}

// creds fetches and checks the credential document for name.
func (c *client) creds(hc *http.Client, kind, name, tok string) {
	res, body := c.get(hc, kind, credsPrefix+name, tok)
	res.RoleName = name
	if res.Status == http.StatusOK {
		var doc struct{ Code, Type, AccessKeyId, SecretAccessKey, Token, Expiration, LastUpdated string }
		switch err := json.Unmarshal([]byte(body), &doc); {
		case err != nil:
			res.Bad = "not JSON"
		case doc.Code != "Success" || doc.Type != "AWS-HMAC" || doc.AccessKeyId == "" || doc.SecretAccessKey == "" || doc.Token == "":
			res.Bad = "incomplete credential document"
		default:
			res.AccessKeyID = doc.AccessKeyId
			if exp, err := time.Parse("2006-01-02T15:04:05Z", doc.Expiration); err != nil || time.Until(exp) < time.Minute {
				res.Bad = "expiration missing, malformed or under a minute away"
			}
		}
	}
	c.out.report(res)
}

// pass reads an allowlisted path and checks it names the region.
func (c *client) pass(hc *http.Client, tok string) {
	path := "/latest/meta-data/placement/region"
	if c.iter%8 == 0 {
		path = "/latest/dynamic/instance-identity/document"
	}
	res, body := c.get(hc, wire.KindPass, path, tok)
	if res.Status == http.StatusOK && !strings.Contains(body, c.region) {
		res.Bad = "answer does not name region " + c.region
	}
	c.out.report(res)
}

// hostile is a request that must never be answered 200.
type hostile struct {
	label string
	raw   string // the whole request, {TOKEN} replaced by the session token header line
}

// hostiles are written byte for byte on a fresh connection, so no client
// library cleans the path or drops a header first.
var hostiles = []hostile{
	{"user-data", "GET /latest/user-data HTTP/1.1\r\n{TOKEN}"},
	{"identity-credentials", "GET /latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance HTTP/1.1\r\n{TOKEN}"},
	{"node role name", "GET /latest/meta-data/iam/security-credentials/node-instance-role HTTP/1.1\r\n{TOKEN}"},
	{"node role extended", "GET /latest/meta-data/iam/security-credentials-extended/node-instance-role HTTP/1.1\r\n{TOKEN}"},
	{"node role upper case", "GET /latest/meta-data/IAM/Security-Credentials/node-instance-role HTTP/1.1\r\n{TOKEN}"},
	{"identity-credentials upper case", "GET /latest/meta-data/IDENTITY-CREDENTIALS/ec2/security-credentials/ec2-instance HTTP/1.1\r\n{TOKEN}"},
	{"pkcs7", "GET /latest/dynamic/instance-identity/pkcs7 HTTP/1.1\r\n{TOKEN}"},
	{"signature", "GET /latest/dynamic/instance-identity/signature HTTP/1.1\r\n{TOKEN}"},
	{"instance tags", "GET /latest/meta-data/tags/instance/Secret HTTP/1.1\r\n{TOKEN}"},
	{"dot-dot", "GET /latest/meta-data/../user-data HTTP/1.1\r\n{TOKEN}"},
	{"encoded dot-dot", "GET /latest/meta-data/%2e%2e/user-data HTTP/1.1\r\n{TOKEN}"},
	{"double slash", "GET /latest//user-data HTTP/1.1\r\n{TOKEN}"},
	{"encoded slash", "GET /latest/meta-data/iam%2fsecurity-credentials%2fnode-instance-role HTTP/1.1\r\n{TOKEN}"},
	{"backslash", "GET /latest/meta-data\\..\\user-data HTTP/1.1\r\n{TOKEN}"},
	{"absolute URI to upstream", "GET http://169.254.169.254/latest/user-data HTTP/1.1\r\n{TOKEN}"},
	{"token PUT with X-Forwarded-For", "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 10.200.0.99\r\n"},
	{"token PUT without TTL", "PUT /latest/api/token HTTP/1.1\r\n"},
	{"token PUT with a trailing slash", "PUT /latest/api/token/ HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"},
	{"token PUT to a dated version", "PUT /2021-07-15/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"},
	{"forged token", "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nX-aws-ec2-metadata-token: AQAEAFakeTokenFromSomewhereElse0000000000000000==\r\n"},
	{"oversized header", "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nX-Filler: " + strings.Repeat("a", 20<<10) + "\r\n"},
	{"body on GET", "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nContent-Length: 4096\r\n\r\n" + strings.Repeat("b", 4096)},
	{"POST credentials", "POST /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nContent-Length: 0\r\n"},
}

// forbidden sends one hostile request (or asks for a foreign role name).
func (c *client) forbidden(tok, ownName string) {
	if c.iter%10 == 0 {
		foreign := c.roles[c.rnd.IntN(len(c.roles))]
		if foreign == ownName {
			return
		}
		// A 200 here is judged like any credential answer: the role may
		// have just become the pod's.
		c.creds(c.fresh, wire.KindForeign, foreign, tok)
		return
	}
	h := hostiles[c.rnd.IntN(len(hostiles))]
	tokenLine := ""
	if tok != "" {
		tokenLine = "X-aws-ec2-metadata-token: " + tok + "\r\n"
	}
	raw := strings.Replace(h.raw, "{TOKEN}", tokenLine, 1)
	if !strings.Contains(raw, "\r\n\r\n") {
		raw += "Host: " + metadataHost + "\r\nConnection: close\r\n\r\n"
	} else {
		raw = strings.Replace(raw, "\r\n\r\n", "\r\nHost: "+metadataHost+"\r\nConnection: close\r\n\r\n", 1)
	}
	res := wire.Result{Kind: wire.KindForbidden, Path: h.label, Token: tok != ""}
	res.Start = time.Now().UnixNano()
	status, body, err := rawRequest(raw)
	res.End = time.Now().UnixNano()
	if err != nil {
		res.Err, res.ErrText = classify(err), err.Error()
	} else {
		res.Status = status
		res.Leak = wire.LeakIn(body, c.marker, c.nodeKey)
	}
	c.out.report(res)
}

// rawRequest writes raw on a new connection and reads one response.
func rawRequest(raw string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", metadataHost+":80", requestTimeout)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := io.WriteString(conn, raw); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(body), nil
}

// classify names a transport error.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return wire.ErrRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return wire.ErrReset
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return wire.ErrUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return wire.ErrTimeout
	}
	return wire.ErrOther
}

// slowloris holds n connections, each trickling a request header one byte
// a second, reconnecting when the server closes one.
func slowloris(n int, out *reporter) {
	var open, opened, closed, answered, dialErrs atomic.Int64
	var maxLife atomic.Int64
	const header = "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Slow: "
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.DialTimeout("tcp", metadataHost+":80", requestTimeout)
				if err != nil {
					dialErrs.Add(1)
					time.Sleep(slowReopenDelay)
					continue
				}
				opened.Add(1)
				open.Add(1)
				began := time.Now()
				readDone := make(chan bool, 1)
				go func() {
					buf := make([]byte, 512)
					n, _ := conn.Read(buf)
					readDone <- n > 0
				}()
				ended := false
				for j := 0; !ended; j++ {
					b := header[j%len(header) : j%len(header)+1]
					if j >= len(header) {
						b = "a"
					}
					if _, err := io.WriteString(conn, b); err != nil {
						break
					}
					select {
					case got := <-readDone:
						if got {
							answered.Add(1)
						}
						ended = true
					case <-stop:
						conn.Close()
						open.Add(-1)
						return
					case <-time.After(time.Second):
					}
				}
				conn.Close()
				open.Add(-1)
				closed.Add(1)
				if life := time.Since(began).Milliseconds(); life > maxLife.Load() {
					maxLife.Store(life)
				}
				time.Sleep(slowReopenDelay)
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			return
		case <-tick.C:
			out.report(wire.Result{Kind: wire.KindSlow, Start: time.Now().UnixNano(),
				Open: int(open.Load()), Opened: int(opened.Load()), Closed: int(closed.Load()),
				Answered: int(answered.Load()), MaxLife: maxLife.Load(), DialErrs: int(dialErrs.Load())})
		}
	}
}
