package fastlane

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// handoffListener is the listener net/http serves: Accept returns the
// connections the lane gave up.
type handoffListener struct {
	// conns carries handed-off connections to Accept.
	conns chan net.Conn
	// done is closed by Close.
	done chan struct{}
	// once closes done once.
	once sync.Once
	// addr is what Addr reports.
	addr net.Addr
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give passes c to net/http; false once the listener is closed.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// replayConn is a handed-off connection: its reads return the bytes the
// lane had read first, then the socket's.
type replayConn struct {
	net.Conn
	// unread are the bytes read from the socket that net/http has not seen.
	unread []byte
	// lane is the lane's record of the connection, released once net/http
	// has counted it.
	lane *conn
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// SyscallConn reaches the socket (conntrack's original destination is read
// from it).
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("fastlane: the connection has no socket")
	}
	return sc.SyscallConn()
}

// CloseWrite lets net/http close gracefully, as on the bare connection.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
