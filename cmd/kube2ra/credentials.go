package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/rolesanywhere"
)

// credentialsTimeout bounds one CreateSession with its retries.
const credentialsTimeout = 60 * time.Second

// credentialsCommand makes one Roles Anywhere CreateSession with the node's
// certificate and prints credential_process JSON: how an operator checks a
// node's certificate, trust anchor and profile before installing the
// DaemonSet, and usable as an AWS CLI credential_process.
func credentialsCommand(args []string, stdout, stderr io.Writer) int {
	cfg := NewConfig()
	fs := flag.NewFlagSet("credentials", flag.ContinueOnError)
	fs.StringVar(&cfg.RATrustAnchorARN, "ra-trust-anchor-arn", "", "IAM Roles Anywhere trust anchor ARN")
	fs.StringVar(&cfg.RAProfileARN, "ra-profile-arn", "", "IAM Roles Anywhere profile ARN")
	fs.StringVar(&cfg.RACertificate, "ra-certificate", "", "certificate PEM file (may be followed by its intermediates)")
	fs.StringVar(&cfg.RAPrivateKey, "ra-private-key", "", "private key PEM file (PKCS#1, PKCS#8 or SEC1)")
	fs.StringVar(&cfg.RAIntermediates, "ra-intermediates", "", "optional PEM bundle of intermediate CA certificates")
	fs.StringVar(&cfg.RAPrivateKeyPasswordFile, "ra-private-key-password-file", "", "file holding the password of an encrypted private key")
	fs.StringVar(&cfg.RAEndpoint, "ra-endpoint", "", "Roles Anywhere endpoint URL (default: the trust anchor's region)")
	fs.BoolVar(&cfg.RAFIPS, "ra-fips", false, "use the FIPS endpoint")
	fs.StringVar(&cfg.Region, "region", "", "override the trust anchor's region")
	fs.DurationVar(&cfg.RASessionDuration, "ra-session-duration", cfg.RASessionDuration, "session duration (15m to 12h)")
	roleARN := fs.String("role-arn", "", "full ARN of the role to assume (required)")
	sessionName := fs.String("session-name", "", "roleSessionName to send (the profile must accept it)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn or error")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *roleARN == "" {
		fmt.Fprintln(stderr, "kube2ra credentials: --role-arn is required: the full ARN of the role, e.g. arn:aws:iam::123456789012:role/app")
		return exitUsage
	}
	if _, err := arn.ParseRole(*roleARN); err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: --role-arn %q: %v\n", *roleARN, err)
		return exitUsage
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: %v\n", err)
		return exitUsage
	}
	rcfg := raConfig(cfg)
	if err := rcfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: %v\n", err)
		return exitUsage
	}
	// NewSource loads and checks the certificate and key before any network call.
	src, err := rolesanywhere.NewSource(rcfg, rolesanywhere.Deps{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), credentialsTimeout)
	defer cancel()
	creds, err := src.Fetch(ctx, credentials.Request{RoleARN: *roleARN, SessionName: *sessionName})
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: %v\n", err)
		return 1
	}
	out, err := rolesanywhere.FormatCredentialProcess(creds)
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra credentials: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(append(out, '\n'))
	return 0
}
