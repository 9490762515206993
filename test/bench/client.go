package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// MetadataHost is the Host header every metadata client sends.
const MetadataHost = "169.254.169.254"

// Token headers of IMDSv2.
const (
	tokenHeader    = "X-aws-ec2-metadata-token"
	tokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
)

// tokenTTLSeconds is the IMDSv2 token lifetime the load asks for: longer
// than any run, so a token is fetched once per connection.
const tokenTTLSeconds = 21600

// maxResponseBytes caps a response body; metadata answers are small.
const maxResponseBytes = 1 << 20

// Response is one HTTP answer as the raw client read it.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// Header lists the header lines in order, as received.
	Header [][2]string
	// Body is the body (a view into the connection's buffer until the next
	// request on the same Conn).
	Body []byte
	// Close is true when the server will close the connection.
	Close bool
}

// Conn is a minimal HTTP/1.1 keep-alive client on one TCP connection. It
// exists so the client side of a benchmark costs as little CPU as possible
// on a shared two-core machine: a prebuilt request, a buffered reader, no
// allocation per request beyond what the body needs.
type Conn struct {
	// addr is the host:port dialled.
	addr string
	// c is the TCP connection, nil when closed.
	c net.Conn
	// br reads responses.
	br *bufio.Reader
	// body is reused for every body.
	body []byte
}

// Dial opens a keep-alive connection to addr.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &Conn{addr: addr, c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

// authorizationToken reads the token file files names for the
// connection's own source address.
func (c *Conn) authorizationToken(files map[string]string) (string, error) {
	ap, err := netip.ParseAddrPort(c.c.LocalAddr().String())
	if err != nil {
		return "", err
	}
	file, ok := files[ap.Addr().Unmap().String()]
	if !ok {
		return "", fmt.Errorf("no token file for source address %s", ap.Addr())
	}
	tok, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return string(tok), nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	if c.c == nil {
		return nil
	}
	err := c.c.Close()
	c.c = nil
	return err
}

// BuildRequest is the bytes of one request: method, path, the metadata
// Host, and extra headers given as name, value pairs.
func BuildRequest(method, path string, headers ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kube2ra-bench\r\nAccept: */*\r\n", method, path, MetadataHost)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	if method == "PUT" || method == "POST" {
		b.WriteString("Content-Length: 0\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// Do writes req and reads one response, with deadline bounding both.
func (c *Conn) Do(req []byte, deadline time.Time) (Response, error) {
	if c.c == nil {
		return Response{}, errors.New("bench: request on a closed connection")
	}
	if err := c.c.SetDeadline(deadline); err != nil {
		return Response{}, err
	}
	if _, err := c.c.Write(req); err != nil {
		return Response{}, err
	}
	return c.read()
}

// Token fetches an IMDSv2 token on this connection.
func (c *Conn) Token(deadline time.Time) (string, error) {
	resp, err := c.Do(BuildRequest("PUT", "/latest/api/token", tokenTTLHeader, strconv.Itoa(tokenTTLSeconds)), deadline)
	if err != nil {
		return "", err
	}
	if resp.Status != 200 {
		return "", fmt.Errorf("token PUT answered %d", resp.Status)
	}
	return string(resp.Body), nil
}

// read parses one response: status line, headers, then a body sized by
// Content-Length or chunked encoding.
func (c *Conn) read() (Response, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return Response{}, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return Response{}, fmt.Errorf("bench: malformed status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return Response{}, fmt.Errorf("bench: malformed status line %q", line)
	}
	resp := Response{Status: status}
	length, chunked := -1, false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return Response{}, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return Response{}, fmt.Errorf("bench: malformed header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxResponseBytes {
				return Response{}, fmt.Errorf("bench: bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			resp.Close = bytes.EqualFold(value, []byte("close"))
		}
		resp.Header = append(resp.Header, [2]string{string(name), string(value)})
	}
	switch {
	case chunked:
		resp.Body, err = c.readChunked()
	case length >= 0:
		if cap(c.body) < length {
			c.body = make([]byte, length)
		}
		resp.Body = c.body[:length]
		_, err = io.ReadFull(c.br, resp.Body)
	default:
		// No length: the body runs to the end of the connection.
		resp.Body, err = io.ReadAll(io.LimitReader(c.br, maxResponseBytes))
		resp.Close = true
	}
	if err != nil {
		return Response{}, err
	}
	if resp.Close {
		_ = c.Close()
	}
	return resp, nil
}

// readChunked reads a chunked body (no trailers expected).
func (c *Conn) readChunked() ([]byte, error) {
	body := c.body[:0]
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 32)
		if err != nil || size < 0 || len(body)+int(size) > maxResponseBytes {
			return nil, fmt.Errorf("bench: bad chunk size line %q", line)
		}
		if size == 0 {
			// Trailers (none expected) end with an empty line.
			for {
				l, err := c.br.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimRight(l, "\r\n")) == 0 {
					c.body = body
					return body, nil
				}
			}
		}
		start := len(body)
		body = append(body, make([]byte, size)...)
		if _, err := io.ReadFull(c.br, body[start:]); err != nil {
			return nil, err
		}
		if _, err := c.br.Discard(2); err != nil {
			return nil, err
		}
	}
}
