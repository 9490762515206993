package fastlane

import (
	"bytes"
	"net/textproto"
)

// maxFields is the most header fields the lane parses; a request with more
// goes to net/http.
const maxFields = 32

// parseResult says what parse made of the bytes read so far.
type parseResult int

const (
	// needMore: no end of the header block yet.
	needMore parseResult = iota
	// parsed: a request of the lane's grammar, in the request.
	parsed
	// handOff: outside the grammar (or a method the lane does not take);
	// net/http reads it from the first byte.
	handOff
)

// field is one header field's name and value, as offsets into the header block.
type field struct {
	nameStart, nameEnd   int
	valueStart, valueEnd int
}

// request is one request of the lane's grammar, pointing into the
// connection's buffer until materialised.
type request struct {
	// method is "GET" or "PUT".
	method string
	// targetStart, targetEnd bound the origin-form target.
	targetStart, targetEnd int
	// host is the Host field's index in fields.
	host int
	// fields are the header fields in order, Host among them.
	fields [maxFields]field
	// nfields is how many of fields are used.
	nfields int
	// end is the length of the request (request line and header block).
	end int
}

var crlfcrlf = []byte("\r\n\r\n")

// parse reads one request from buf: the lane's strict subset of
// HTTP/1.1, and nothing that could be read two ways. It is a GET or PUT of an
// origin-form path (only bytes a path keeps unescaped: no query, fragment
// or percent-escape), "HTTP/1.1", CRLF line ends (a bare LF hands off),
// exactly one Host, fields of token names and visible-ASCII values, and no body: no Transfer-Encoding, a Content-Length only of 0,
// no Expect, Upgrade, TE or Trailer, and a Connection only of keep-alive.
// Anything else is handed to net/http whole, which answers or refuses it as
// it always has.
func parse(buf []byte, r *request) parseResult {
	end := bytes.Index(buf, crlfcrlf)
	if i := bareLF(buf); i >= 0 && (end < 0 || i < end) {
		return handOff
	}
	if end < 0 {
		return needMore
	}
	end += len(crlfcrlf)
	head := buf[:end-2] // each line with its CRLF
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		r.method, r.targetStart = "GET", 4
	case bytes.HasPrefix(line, []byte("PUT /")):
		r.method, r.targetStart = "PUT", 4
	default:
		return handOff
	}
	sp := bytes.IndexByte(line[r.targetStart:], ' ')
	if sp < 0 || string(line[r.targetStart+sp:]) != " HTTP/1.1" {
		return handOff
	}
	r.targetEnd = r.targetStart + sp
	for _, b := range line[r.targetStart:r.targetEnd] {
		if !isPathByte(b) {
			return handOff
		}
	}
	r.nfields, r.host, r.end = 0, -1, end
	off := len(line) + 2
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if r.nfields == maxFields {
			return handOff
		}
		f, ok := parseField(line, off)
		if !ok {
			return handOff
		}
		name := buf[f.nameStart:f.nameEnd]
		value := buf[f.valueStart:f.valueEnd]
		switch {
		case equalFold(name, "Host"):
			if r.host >= 0 || !validHost(value) {
				return handOff
			}
			r.host = r.nfields
		case equalFold(name, "Content-Length"):
			if string(value) != "0" || seen(buf, r, "Content-Length") {
				return handOff
			}
		case equalFold(name, "Connection"):
			if !equalFold(value, "keep-alive") || seen(buf, r, "Connection") {
				return handOff
			}
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Expect"), equalFold(name, "Upgrade"),
			equalFold(name, "TE"), equalFold(name, "Trailer"):
			return handOff
		}
		r.fields[r.nfields] = f
		r.nfields++
		off += len(line) + 2
	}
	if r.host < 0 {
		return handOff
	}
	return parsed
}

// bareLF is the index of the first LF without a CR before it, or -1: a
// request with one is net/http's to read (it would otherwise never end here).
func bareLF(buf []byte) int {
	for i, b := range buf {
		if b == '\n' && (i == 0 || buf[i-1] != '\r') {
			return i
		}
	}
	return -1
}

// isPathByte reports whether b may be in the lane's targets: the bytes
// net/url keeps unescaped in a path, so the URL's Path is the target as sent
// (no RawPath) and no query, fragment or escape needs reading.
func isPathByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '-', '_', '.', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
		return true
	}
	return false
}

// parseField splits one field line (without its CRLF) starting at off in
// the buffer: a token name, a colon, optional whitespace, a value of
// visible ASCII, spaces and tabs, optional whitespace.
func parseField(line []byte, off int) (field, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return field{}, false
	}
	for _, b := range line[:colon] {
		if !isTokenByte(b) {
			return field{}, false
		}
	}
	v0, v1 := colon+1, len(line)
	for v0 < v1 && (line[v0] == ' ' || line[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (line[v1-1] == ' ' || line[v1-1] == '\t') {
		v1--
	}
	for _, b := range line[v0:v1] {
		if (b < ' ' && b != '\t') || b >= 0x7f {
			return field{}, false
		}
	}
	return field{nameStart: off, nameEnd: off + colon, valueStart: off + v0, valueEnd: off + v1}, true
}

// seen reports whether a field called name came before in r.
func seen(buf []byte, r *request, name string) bool {
	for _, f := range r.fields[:r.nfields] {
		if equalFold(buf[f.nameStart:f.nameEnd], name) {
			return true
		}
	}
	return false
}

// validHost accepts a host[:port] of letters, digits and . - : [ ] only.
func validHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, b := range v {
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case b == '.', b == '-', b == ':', b == '[', b == ']':
		default:
			return false
		}
	}
	return true
}

// isTokenByte reports whether b may be in a field name (RFC 9110 tchar).
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// equalFold is ASCII case-insensitive equality of b and s.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// knownKeys are the canonical names of the fields SDKs send, so the common
// request allocates no key.
var knownKeys = [...]string{
	"Accept", "Accept-Encoding", "Amz-Sdk-Invocation-Id", "Amz-Sdk-Request",
	"Authorization", "Connection", "Content-Length", "Content-Type",
	"User-Agent", "X-Amz-User-Agent", "X-Amzn-Trace-Id", "Traceparent",
	"X-Aws-Ec2-Metadata-Token", "X-Aws-Ec2-Metadata-Token-Ttl-Seconds",
	"X-Forwarded-For", "Forwarded",
}

// canonicalKey is textproto's canonical form of name.
func canonicalKey(name []byte) string {
	for _, k := range knownKeys {
		if equalFold(name, k) {
			return k
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}
