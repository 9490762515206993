package rolesanywhere

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
)

// credentialProcessOutput is the JSON the AWS SDKs and CLI read from a
// credential_process command.
type credentialProcessOutput struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken"`
	Expiration      string `json:"Expiration"`
}

// FormatCredentialProcess renders c as credential_process output (Version 1,
// Expiration in RFC 3339 UTC). The result holds secrets: write it to stdout
// only, never to a log.
func FormatCredentialProcess(c credentials.Credentials) ([]byte, error) {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil, errors.New("credentials have no access key; nothing to print")
	}
	if c.Expiration.IsZero() {
		return nil, errors.New("credentials have no expiration; temporary credentials always have one")
	}
	return json.Marshal(credentialProcessOutput{
		Version:         1,
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Expiration:      c.Expiration.UTC().Format(time.RFC3339),
	})
}
