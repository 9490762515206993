package proxy

import (
	"encoding/json"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/credentials"
)

// maxCredentialDocs bounds the document cache. A node holds one credential
// per pod and role (a few hundred at most); past this, something is wrong
// and the cache starts over rather than grow.
const maxCredentialDocs = 4096

// credentialDocs keeps the encoded IMDS document of every credential the
// proxy has served, and the pods it has served each one to. A repeated
// read is then a lookup and a write, not an encoding; and the first time a
// pod receives a credential can be told from the hundreds of reads an SDK
// makes of the same one (the first is logged at info, repeats at debug).
type credentialDocs struct {
	// clock tells when a document's credential has expired.
	clock clock.PassiveClock
	// mu guards byKey and each document's pods.
	mu sync.RWMutex
	// byKey holds documents by access key ID.
	byKey map[string]*credentialDoc
}

// credentialDoc is one encoded credential document.
type credentialDoc struct {
	// creds are the credentials body encodes; a hit must match them all.
	creds credentials.Credentials
	// encoded is the document as written to the wire.
	encoded *encodedDoc
	// pods are the pods this credential has been served to.
	pods map[types.UID]struct{}
}

// encodedDoc is an encoded document and its Content-Length header value,
// both made once per credential so a repeated read allocates neither.
// Immutable once built.
type encodedDoc struct {
	// body is the document.
	body []byte
	// contentLength is the Content-Length header's value list for body.
	contentLength []string
}

// newEncodedDoc wraps body with its Content-Length.
func newEncodedDoc(body []byte) *encodedDoc {
	return &encodedDoc{body: body, contentLength: []string{strconv.Itoa(len(body))}}
}

func newCredentialDocs(c clock.PassiveClock) *credentialDocs {
	return &credentialDocs{clock: c, byKey: map[string]*credentialDoc{}}
}

// document returns the IMDS document for creds and whether pod is
// receiving this credential for the first time. creds must be complete
// (the caller checks); without LastUpdated, the first encoding stamps it.
func (d *credentialDocs) document(creds credentials.Credentials, pod types.UID) (doc *encodedDoc, first bool, err error) {
	return d.documentWith(creds, pod, encodeCredentials)
}

// documentWith is document with another encoding (a cache holds one
// encoding only: the token door keeps a cache of its own).
func (d *credentialDocs) documentWith(creds credentials.Credentials, pod types.UID, encode func(credentials.Credentials) ([]byte, error)) (enc *encodedDoc, first bool, err error) {
	d.mu.RLock()
	doc := d.byKey[creds.AccessKeyID]
	if doc != nil && sameCredentials(doc.creds, creds) {
		_, seen := doc.pods[pod]
		d.mu.RUnlock()
		if seen {
			return doc.encoded, false, nil
		}
		d.mu.Lock()
		doc.pods[pod] = struct{}{}
		d.mu.Unlock()
		return doc.encoded, true, nil
	}
	d.mu.RUnlock()

	asked := creds
	if creds.LastUpdated.IsZero() {
		creds.LastUpdated = d.clock.Now()
	}
	body, err := encode(creds)
	if err != nil {
		return nil, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sweepLocked()
	if old := d.byKey[creds.AccessKeyID]; old != nil && sameCredentials(old.creds, asked) {
		// Another request encoded it meanwhile.
		_, seen := old.pods[pod]
		old.pods[pod] = struct{}{}
		return old.encoded, !seen, nil
	}
	enc = newEncodedDoc(body)
	d.byKey[creds.AccessKeyID] = &credentialDoc{creds: creds, encoded: enc, pods: map[types.UID]struct{}{pod: {}}}
	return enc, true, nil
}

// sweepLocked drops documents whose credentials have expired, and starts
// over when the cache is still full after that.
func (d *credentialDocs) sweepLocked() {
	if len(d.byKey) < maxCredentialDocs/4 {
		return
	}
	now := d.clock.Now()
	for k, doc := range d.byKey {
		if !doc.creds.Expiration.After(now) {
			delete(d.byKey, k)
		}
	}
	if len(d.byKey) >= maxCredentialDocs {
		clear(d.byKey)
	}
}

// sameCredentials reports whether the cached credential has the same
// fields as the asked one (a refreshed credential under a reused key ID is
// a new document). An asked credential without LastUpdated matches the
// stamp the cached one got.
func sameCredentials(cached, asked credentials.Credentials) bool {
	return cached.AccessKeyID == asked.AccessKeyID && cached.SecretAccessKey == asked.SecretAccessKey &&
		cached.SessionToken == asked.SessionToken && cached.Expiration.Equal(asked.Expiration) &&
		(asked.LastUpdated.IsZero() || cached.LastUpdated.Equal(asked.LastUpdated))
}

// encodeCredentials renders creds as IMDS does under security-credentials/.
func encodeCredentials(creds credentials.Credentials) ([]byte, error) {
	return encodeIMDSCredentials(creds, "")
}

// encodeIMDSCredentials renders creds as IMDS does, with AccountId when
// accountID is set (the extended document): IMDS's fields in IMDS's order
// and layout, one per line as `  "Name" : "value"`, so scripts written
// against EC2 (`grep AccessKeyId | cut -d'"' -f4`) read it too.
func encodeIMDSCredentials(creds credentials.Credentials, accountID string) ([]byte, error) {
	fields := [][2]string{
		{"Code", "Success"},
		{"LastUpdated", creds.LastUpdated.UTC().Format(imdsTimeLayout)},
		{"Type", "AWS-HMAC"},
		{"AccessKeyId", creds.AccessKeyID},
		{"SecretAccessKey", creds.SecretAccessKey},
		{"Token", creds.SessionToken},
		{"Expiration", creds.Expiration.UTC().Format(imdsTimeLayout)},
	}
	if accountID != "" {
		fields = append(fields, [2]string{"AccountId", accountID})
	}
	body := append(make([]byte, 0, 256+len(creds.SessionToken)), "{\n"...)
	for i, f := range fields {
		value, _ := json.Marshal(f[1]) // a string always encodes
		body = append(append(append(append(body, `  "`...), f[0]...), `" : `...), value...)
		if i < len(fields)-1 {
			body = append(body, ',')
		}
		body = append(body, '\n')
	}
	return append(body, '}'), nil
}
