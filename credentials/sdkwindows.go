package credentials

import "time"

// What the AWS SDKs do with instance-metadata credentials near their expiry,
// read from the SDKs' own code (docs/design.md, "Credential lifetime and the
// SDKs", has the references). kube2ra never serves credentials with less
// left than the largest of these needs, so no SDK signs with expired ones.
const (
	// BotocoreExtensionMaxUse: botocore (boto3, the AWS CLI; utils.py
	// _evaluate_expiration) treats IMDS credentials expiring within its
	// 15-minute refresh window plus a random 2..10 minutes as a sign of an
	// outage, moves their expiry to now plus that much, and uses them until
	// its 15-minute advisory window opens again: for up to 10 minutes after
	// it read them, whatever their real expiry.
	BotocoreExtensionMaxUse = 10 * time.Minute
	// JSv3RefreshWindow: the JavaScript SDK v3 re-reads credentials that
	// expire within 5 minutes, before every call if they always do
	// (credential-provider-node's credentialsTreatedAsExpired and
	// @smithy/core's EXPIRATION_MS, both 300000 ms in 3.1175.0).
	JSv3RefreshWindow = 5 * time.Minute
	// GoV2ExpiryWindow: aws-sdk-go-v2's ec2rolecreds is cached without an
	// expiry window and uses credentials until their Expiration.
	GoV2ExpiryWindow = 0
	// JavaV2StaleBefore: the Java SDK v2 treats credentials as stale one
	// minute before expiry (from its design, not read here: the machine has
	// no Java SDK).
	JavaV2StaleBefore = time.Minute

	// SDKMinTTL is the least life served credentials must have so that every
	// SDK above is done with them before they expire: botocore's 10 minutes
	// plus a minute for calls in flight and clock skew (--credential-min-ttl).
	SDKMinTTL = BotocoreExtensionMaxUse + time.Minute
)
