package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// stdinFor is the runtime's stdin for the plugin: its entry plus extra keys.
func stdinFor(t *testing.T, cfg Config, extra map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"], m["name"] = "1.0.0", "test"
	for k, v := range extra {
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cniError is err as the CNI error the runtime would print.
func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a CNI error", err)
	}
	return e
}

var prevResult = map[string]any{"cniVersion": "1.0.0", "interfaces": []any{map[string]any{"name": "eth0"}}}

func TestAddRefusesBeforeTouchingTheNamespace(t *testing.T) {
	bad := testConfig()
	bad.Port = 0
	cases := []struct {
		name  string
		stdin []byte
		code  uint
		msg   string
	}{
		{"not JSON", []byte("{"), types.ErrDecodingFailure, "not valid JSON"},
		{"not chained", stdinFor(t, testConfig(), nil), types.ErrInvalidNetworkConfig, "no prevResult"},
		{"bad entry names the field", stdinFor(t, bad, map[string]any{"prevResult": prevResult}), types.ErrInvalidNetworkConfig, "port is 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			// A netns path that does not exist: reaching it would give another error.
			err := Commands{Stdout: &out}.Add(&skel.CmdArgs{ContainerID: "c1", Netns: "/nonexistent/netns", StdinData: tc.stdin})
			e := cniError(t, err)
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("error = %d %q, want %d containing %q", e.Code, e.Msg, tc.code, tc.msg)
			}
			if out.Len() != 0 {
				t.Errorf("printed a result on failure: %s", out.String())
			}
		})
	}
}

func TestAddFailsClosedWhenTheNamespaceIsGone(t *testing.T) {
	var out bytes.Buffer
	err := Commands{Stdout: &out}.Add(&skel.CmdArgs{ContainerID: "c1", Netns: "/nonexistent/netns",
		StdinData: stdinFor(t, testConfig(), map[string]any{"prevResult": prevResult})})
	e := cniError(t, err)
	if e.Code != types.ErrInternal || !strings.Contains(e.Msg, "sandbox is refused") || !strings.Contains(e.Details, "/nonexistent/netns") {
		t.Errorf("error = %+v, want the sandbox refused with the namespace named", e)
	}
	if out.Len() != 0 {
		t.Errorf("printed a result on failure: %s", out.String())
	}
}

func TestDelAndGCNeverFail(t *testing.T) {
	c := Commands{Stdout: &bytes.Buffer{}}
	for _, stdin := range [][]byte{[]byte("garbage"), stdinFor(t, testConfig(), nil)} {
		if err := c.Del(&skel.CmdArgs{Netns: "/nonexistent", StdinData: stdin}); err != nil {
			t.Errorf("DEL(%s) = %v, want nil: a bad entry must not block pod deletion", stdin, err)
		}
		if err := c.GC(&skel.CmdArgs{StdinData: stdin}); err != nil {
			t.Errorf("GC(%s) = %v, want nil", stdin, err)
		}
	}
}

func TestStatus(t *testing.T) {
	c := Commands{Stdout: &bytes.Buffer{}}
	bad := testConfig()
	bad.IPTablesBackend = "auto"
	e := cniError(t, c.Status(&skel.CmdArgs{StdinData: stdinFor(t, bad, nil)}))
	if e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, `iptablesBackend "auto"`) {
		t.Errorf("STATUS with a bad backend = %+v", e)
	}
}

func TestVersionsAcceptWhatPrimaryConflistsDeclare(t *testing.T) {
	got := Versions().SupportedVersions()
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(got, v) {
			t.Errorf("versions %v lack %s", got, v)
		}
	}
}
