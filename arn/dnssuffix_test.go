package arn

import (
	"strings"
	"testing"
)

// TestEveryKnownPartitionHasItsOwnDNSSuffix: each partition KnownPartition
// accepts has the domain of the AWS SDKs' partitions.json, so no endpoint
// is built in another partition's domain (amazonaws.com was once the answer
// for aws-iso-e, aws-iso-f and aws-eusc).
func TestEveryKnownPartitionHasItsOwnDNSSuffix(t *testing.T) {
	want := map[string]string{
		"aws": "amazonaws.com", "aws-us-gov": "amazonaws.com", "aws-cn": "amazonaws.com.cn",
		"aws-iso": "c2s.ic.gov", "aws-iso-b": "sc2s.sgov.gov", "aws-iso-e": "cloud.adc-e.uk",
		"aws-iso-f": "csp.hci.ic.gov", "aws-eusc": "amazonaws.eu",
	}
	for _, p := range strings.Split(partitionList, ", ") {
		if !KnownPartition(p) {
			t.Errorf("%s is in the partition list but not known", p)
		}
		if got := DNSSuffix(p); got != want[p] {
			t.Errorf("DNSSuffix(%s) = %q, want %q", p, got, want[p])
		}
	}
}
