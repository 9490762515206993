// Package handover passes a running agent's listening sockets to the agent
// that replaces it on the same node, so that an upgrade never leaves the
// metadata port without a listener.
//
// The serving agent offers its sockets on a unix socket in a directory only
// the agent mounts (Open, Offer.Serve). A new agent that finds the offer
// (Dial) warms up without binding anything, then takes duplicates of the
// listening sockets over SCM_RIGHTS (Claim.Take), serves on them and says so
// (Claim.Serving). From the moment it serves, both processes accept from the
// same kernel accept queue: no connection is refused or reset. The old agent
// then stops accepting (closes its copies) and drains.
//
// Only listening sockets and a small opaque state (the agent's IMDSv2 token
// key, so the tokens pods hold stay valid) cross the unix socket, never
// credentials: the new agent warms its own cache. Both ends check with
// SO_PEERCRED that the other runs as the same uid.
package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// SocketName is the handover socket's file name in its directory.
const SocketName = "handover.sock"

// DefaultWarmupTimeout bounds how long a successor may stay connected
// without taking over: the serving agent answers /readyz 503 meanwhile, so a
// successor stuck in its start must not hold it there for ever. It covers
// the new agent's informer sync bound (2 minutes), its rules and a prefetch.
const DefaultWarmupTimeout = 5 * time.Minute

// maxListeners bounds the descriptors one handover carries: metadata port
// on two families, ops port on two addresses, with room to spare.
const maxListeners = 16

// maxMessageBytes bounds one message on the handover socket.
const maxMessageBytes = 4 << 10

// message is one packet on the handover socket (SOCK_SEQPACKET keeps the
// boundaries). The exchange is: successor hello → offer welcome; successor
// take → offer listeners (with the descriptors); successor serving.
type message struct {
	// Msg is the step: hello, welcome, take, listeners, serving.
	Msg string `json:"msg"`
	// PID is the sender's process id, for the logs.
	PID int `json:"pid,omitempty"`
	// Version is the sender's version, for the logs.
	Version string `json:"version,omitempty"`
	// Addrs are the local addresses of the descriptors sent with listeners, in order.
	Addrs []string `json:"addrs,omitempty"`
	// State is OfferOptions.State's value, sent with listeners.
	State []byte `json:"state,omitempty"`
}

const (
	msgHello     = "hello"
	msgWelcome   = "welcome"
	msgTake      = "take"
	msgListeners = "listeners"
	msgServing   = "serving"
)

// SocketPath is the handover socket in dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// PrepareDir makes dir if it is missing, checks that it belongs to this
// process's uid and makes it 0700: whoever can create the socket there
// could pose as the serving agent.
func PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("handover directory %s: %w (mount it writable for the agent's uid %d, or turn the handover off)", dir, err, os.Geteuid())
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("handover directory %s: %w", dir, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("handover directory %s belongs to uid %d, not the agent's uid %d: give it to uid %d (mode 0700) or turn the handover off", dir, st.Uid, os.Geteuid(), os.Geteuid())
	}
	if st.Mode&0o777 != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("handover directory %s has mode %o and could not be made 0700: %w", dir, st.Mode&0o777, err)
		}
	}
	return nil
}

// Peer is the other end of a handover connection.
type Peer struct {
	// PID is its process id (from SO_PEERCRED).
	PID int
	// Version is the version it announced.
	Version string
}

// peerCred reads the peer's credentials and refuses a peer of another uid.
func peerCred(c *net.UnixConn) (pid int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("reading the peer's credentials (SO_PEERCRED): %w", credErr)
	}
	if int(cred.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("peer pid %d runs as uid %d, not this agent's uid %d: refused (only an agent of the same uid may take the sockets; find what else uses the handover directory)", cred.Pid, cred.Uid, os.Geteuid())
	}
	return int(cred.Pid), nil
}

// send writes one message, with descriptors when files is not empty.
func send(c *net.UnixConn, m message, files []*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("sending %s: %w", m.Msg, err)
	}
	return nil
}

// receive reads one message of the wanted step, and the descriptors it
// carries (the caller owns them).
func receive(c *net.UnixConn, want string) (message, []*os.File, error) {
	buf := make([]byte, maxMessageBytes)
	oob := make([]byte, unix.CmsgSpace(4*maxListeners))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, nil, fmt.Errorf("waiting for %s: %w", want, err)
	}
	files, ferr := parseRights(oob[:oobn])
	fail := func(err error) (message, []*os.File, error) {
		closeFiles(files)
		return message{}, nil, err
	}
	if ferr != nil {
		return fail(ferr)
	}
	if n == 0 {
		return fail(fmt.Errorf("waiting for %s: %w", want, io.EOF))
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return fail(fmt.Errorf("waiting for %s: message or descriptors truncated", want))
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return fail(fmt.Errorf("waiting for %s: unreadable message: %w", want, err))
	}
	if m.Msg != want {
		return fail(fmt.Errorf("waiting for %s, got %q", want, m.Msg))
	}
	return m, files, nil
}

// parseRights turns SCM_RIGHTS control messages into files.
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("reading the descriptors: %w", err)
	}
	var files []*os.File
	for _, cm := range msgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "handover"))
		}
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// setDeadline bounds one exchange by ctx's deadline, if any.
func setDeadline(ctx context.Context, c *net.UnixConn) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	} else {
		_ = c.SetDeadline(time.Time{})
	}
}

// noOffer reports whether a connect error means that no agent serves here
// (no socket, or a stale one nobody listens on).
func noOffer(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// addrKey is a listener address as matched between the two agents.
func addrKey(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// defaultLogger discards.
func defaultLogger(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	d := logrus.New()
	d.SetOutput(io.Discard)
	return d
}

// closer runs f once.
type closer struct {
	once sync.Once
	f    func()
}

func (c *closer) close() { c.once.Do(c.f) }
