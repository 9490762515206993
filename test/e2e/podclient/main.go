// Command podclient is what an application in a pod does: aws-sdk-go-v2's
// default credential chain and region lookup, with no configuration, from
// inside the pod's network namespace. It prints what it obtained as JSON so
// the end-to-end tests can compare it with what the fake AWS issued.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// result is printed on stdout.
type result struct {
	AccessKeyID     string    `json:"AccessKeyId"`
	SecretAccessKey string    `json:"SecretAccessKey"`
	SessionToken    string    `json:"SessionToken"`
	Expires         time.Time `json:"Expires"`
	Source          string    `json:"Source"`
	Region          string    `json:"Region"`
	// Arn is GetCallerIdentity's answer, signed with the credentials, when
	// AWS_ENDPOINT_URL_STS is set (the fake STS).
	Arn string `json:"Arn,omitempty"`
	// LookupMicros is how long the SDK took to find the region and the
	// credentials, in this process: with kube2ra, the metadata exchange;
	// with credentials in the environment, next to nothing. The real-node
	// tier subtracts the two to get kube2ra's share of a cold start
	// without the process's own start, which contention on a loaded node
	// makes vary by tens of milliseconds from one run to the next.
	LookupMicros int64  `json:"LookupMicros"`
	Error        string `json:"Error,omitempty"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out result
	cfg, err := config.LoadDefaultConfig(ctx)
	if err == nil {
		start := time.Now()
		if cfg.Region != "" {
			// An application with AWS_REGION set never asks IMDS for it.
			out.Region = cfg.Region
		} else {
			var region *imds.GetRegionOutput
			region, err = imds.NewFromConfig(cfg).GetRegion(ctx, &imds.GetRegionInput{})
			if err == nil {
				out.Region = region.Region
			}
		}
		creds, cerr := cfg.Credentials.Retrieve(ctx)
		if cerr != nil {
			err = cerr
		} else {
			out.AccessKeyID, out.SecretAccessKey, out.SessionToken = creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken
			out.Expires, out.Source = creds.Expires, creds.Source
		}
		out.LookupMicros = time.Since(start).Microseconds()
	}
	if err == nil && os.Getenv("AWS_ENDPOINT_URL_STS") != "" {
		// What an application does next: a signed call. The SDK reads the
		// endpoint from AWS_ENDPOINT_URL_STS, as a user would set it.
		cfg.Region = out.Region
		id, ierr := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if ierr != nil {
			err = ierr
		} else {
			out.Arn = *id.Arn
		}
	}
	if err != nil {
		out.Error = err.Error()
	}
	enc := json.NewEncoder(os.Stdout)
	if e := enc.Encode(out); e != nil {
		fmt.Fprintln(os.Stderr, e)
	}
	if err != nil {
		os.Exit(1)
	}
}
