package rolesanywhere

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
	"github.com/kube2ra/kube2ra/test/syncbuf"
)

// kubeletDir mimics how the kubelet projects a Secret: files in a
// timestamped directory, "..data" pointing at it, and the visible names
// pointing through "..data". An update writes a new directory and swaps
// "..data" with one rename, so readers see old or new, never a mix.
type kubeletDir struct {
	dir string
	gen int
}

func newKubeletDir(t *testing.T, cert, key []byte) *kubeletDir {
	t.Helper()
	k := &kubeletDir{dir: t.TempDir()}
	k.swap(t, cert, key)
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(k.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// swap publishes cert and key atomically, as the kubelet's AtomicWriter does.
func (k *kubeletDir) swap(t *testing.T, cert, key []byte) {
	t.Helper()
	k.gen++
	ts := fmt.Sprintf("..2026_11_22_10_00_%02d.%09d", k.gen, k.gen)
	if err := os.Mkdir(filepath.Join(k.dir, ts), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(k.dir, ts), "tls.crt", cert)
	writeFile(t, filepath.Join(k.dir, ts), "tls.key", key)
	old, _ := os.Readlink(filepath.Join(k.dir, "..data"))
	tmp := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func (k *kubeletDir) files() KeyFiles {
	return KeyFiles{Certificate: filepath.Join(k.dir, "tls.crt"), PrivateKey: filepath.Join(k.dir, "tls.key")}
}

// load drives concurrent Fetch calls until stop, counting results.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	issued     []credentials.Credentials
	wg         sync.WaitGroup
}

func startLoad(ctx context.Context, src *Source, workers int) *load {
	l := &load{}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					l.errs = append(l.errs, err)
				} else {
					l.ok.Add(1)
					l.issued = append(l.issued, creds)
				}
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func TestRotationBySymlinkSwapUnderLoadHasNoFailedRequest(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, true, fakera.Profile{})
	logs := &syncbuf.Buffer{}
	logger := logrus.New()
	logger.SetOutput(logs)
	logger.SetLevel(logrus.DebugLevel)

	type gen struct {
		leaf *x509.Certificate
		cert []byte
		key  []byte
	}
	newGen := func(kind keyKind, format keyFormat) gen {
		key := testKeys.fresh(t, kind)
		leaf := root.leaf(t, key, now, leafOpts{cn: "node-rotating"})
		return gen{leaf: leaf, cert: certPEM(leaf), key: keyPEM(t, key, format)}
	}
	// Rotations change serial, key and even key type, as a CA may.
	gens := []gen{newGen(p256, sec1), newGen(p256, pkcs8), newGen(rsa2048, pkcs1), newGen(p384, sec1), newGen(p256, sec1)}
	kd := newKubeletDir(t, gens[0].cert, gens[0].key)
	src := newTestSource(t, env, kd.files(), func(c *Config, d *Deps) {
		c.ReloadInterval = 10 * time.Millisecond
		d.Logger = logger
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); src.Run(ctx) }()

	loadCtx, stopLoad := context.WithCancel(context.Background())
	l := startLoad(loadCtx, src, 4)
	// waitServed waits until the fake has granted a few requests signed
	// with serial, so every generation is exercised under load however
	// slow the machine.
	waitServed := func(serial string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for countAccepted(env.fake, serial) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("serial %s: %d requests granted; pair in use %s", serial, countAccepted(env.fake, serial), src.KeyPair().Serial())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitServed(gens[0].leaf.SerialNumber.String())
	bad := newGen(p256, sec1)
	for i, g := range gens[1:] {
		if i == 1 {
			// A broken update (certificate of one pair, key of another)
			// must be refused while the old pair keeps serving.
			kd.swap(t, bad.cert, gens[0].key)
			waitLogged(t, logs, "Rejected changed Roles Anywhere certificate or key")
			if got := src.KeyPair().Serial(); got == bad.leaf.SerialNumber.String() {
				t.Fatal("mismatched pair was loaded")
			}
		}
		kd.swap(t, g.cert, g.key)
		waitServed(g.leaf.SerialNumber.String())
	}
	stopLoad()
	l.wg.Wait()
	cancel()
	<-watchDone

	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed during rotation, first: %v", n, l.errs[0])
	}
	seen := map[string]int{}
	for _, a := range env.fake.Accepted() {
		seen[a.Serial]++
	}
	for i, g := range gens {
		if seen[g.leaf.SerialNumber.String()] == 0 {
			t.Errorf("generation %d (serial %s) never reached the fake", i, g.leaf.SerialNumber)
		}
	}
	if seen[bad.leaf.SerialNumber.String()] != 0 {
		t.Error("the mismatched certificate was used")
	}
	t.Logf("%d requests, 0 failures, %d rotations, accepted per serial: %v", l.ok.Load(), len(gens)-1, seen)

	// Logs mention the rotation and the refusal, never a secret.
	out := logs.String()
	for _, want := range []string{"Loaded rotated Roles Anywhere certificate", "Rejected changed Roles Anywhere certificate or key", "does not match"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	var secrets []string
	for _, g := range append(gens, bad) {
		secrets = append(secrets, secretsOfKey(g.key, nil)...)
	}
	for _, c := range l.issued {
		secrets = append(secrets, c.SecretAccessKey, c.SessionToken)
	}
	assertNoSecrets(t, out, secrets)
}

func TestRotationByInPlaceRewriteIsNeverHalfApplied(t *testing.T) {
	// Without the kubelet's atomic swap, a reader can see the new
	// certificate with the old key for a moment; that pair must be
	// refused and the next poll must pick up the finished pair.
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{})
	dir := t.TempDir()
	k1, k2 := testKeys.fresh(t, p256), testKeys.fresh(t, p256)
	l1, l2 := root.leaf(t, k1, now, leafOpts{}), root.leaf(t, k2, now, leafOpts{})
	files := KeyFiles{Certificate: writeFile(t, dir, "tls.crt", certPEM(l1)), PrivateKey: writeFile(t, dir, "tls.key", keyPEM(t, k1, sec1))}
	logs := &syncbuf.Buffer{}
	logger := logrus.New()
	logger.SetOutput(logs)
	src := newTestSource(t, env, files, func(c *Config, d *Deps) {
		c.ReloadInterval = 5 * time.Millisecond
		d.Logger = logger
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	l := startLoad(loadCtx, src, 3)

	writeFile(t, dir, "tls.crt", certPEM(l2))
	waitLogged(t, logs, "does not match") // a poll saw cert 2 + key 1 and refused it
	if src.KeyPair().Serial() != l1.SerialNumber.String() {
		t.Fatal("half-written pair was loaded")
	}
	writeFile(t, dir, "tls.key", keyPEM(t, k2, sec1))
	deadline := time.Now().Add(20 * time.Second)
	for src.KeyPair().Serial() != l2.SerialNumber.String() {
		if time.Now().After(deadline) {
			t.Fatal("finished pair not picked up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline = time.Now().Add(20 * time.Second)
	for countAccepted(env.fake, l2.SerialNumber.String()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("new serial never reached the fake")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopLoad()
	l.wg.Wait()
	if n := l.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed, first: %v", n, l.errs[0])
	}
}

// countAccepted is how many requests the fake granted to serial.
func countAccepted(f *fakera.Server, serial string) int {
	n := 0
	for _, a := range f.Accepted() {
		if a.Serial == serial {
			n++
		}
	}
	return n
}

// waitLogged waits until the log holds want.
func waitLogged(t *testing.T, logs *syncbuf.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestErrorPathsLogNoSecrets(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{})
	var logs bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	logger.SetLevel(logrus.TraceLevel)
	id := newIdentity(t, t.TempDir(), root, rsa2048, pkcs8, true, false, now)
	src := newTestSource(t, env, id.files, func(_ *Config, d *Deps) { d.Logger = logger })
	var secrets []string
	creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, creds.SecretAccessKey, creds.SessionToken)
	env.fake.ThrottleNext(5)
	_, err1 := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
	_, err2 := src.Fetch(context.Background(), credentials.Request{RoleARN: testOtherRole})
	if err1 == nil || err2 == nil {
		t.Fatal("expected failures")
	}
	// Break the key file: the watcher logs the refusal.
	other := testKeys.fresh(t, p256)
	otherPEM := keyPEM(t, other, sec1)
	writeFile(t, filepath.Dir(id.files.PrivateKey), "tls.key", otherPEM)
	if _, err := src.keys.Check(); err == nil {
		t.Fatal("mismatched key accepted")
	}
	secrets = append(secrets, secretsOfKey(id.key, nil)...)
	secrets = append(secrets, secretsOfKey(otherPEM, other)...)
	text := logs.String() + err1.Error() + err2.Error() + fmt.Sprint(creds) + src.KeyPair().String()
	if len(logs.String()) == 0 {
		t.Fatal("nothing logged; the check proves nothing")
	}
	assertNoSecrets(t, text, secrets)
}
