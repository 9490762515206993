package fastlane

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkKeepAliveRequest is one request and its answer on a keep-alive
// loopback connection, through the lane and through net/http alone, with
// the same handler: the per-request allocations (allocs/op, B/op) are what
// the collector of a node agent pays for.
func BenchmarkKeepAliveRequest(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.Header.Get("X-Aws-Ec2-Metadata-Token"))
	})
	req := []byte(get("/lane/x", "X-aws-ec2-metadata-token: AQAEAK1dBQ==\r\nAccept-Encoding: gzip\r\n"))
	for _, bc := range []struct {
		name  string
		takes bool
	}{{"lane", true}, {"net_http", false}} {
		b.Run(bc.name, func(b *testing.B) {
			takes := bc.takes
			s := &Server{HTTP: &http.Server{Handler: handler}, Takes: func(string, []byte) bool { return takes }}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = s.Serve(ln) }()
			defer s.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			roundTrip() // the connection moves to net/http, or not, before timing
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}
