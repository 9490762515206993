// What a Node.js application in a pod does: the AWS SDK for JavaScript v3's
// default credential chain (fromNodeProviderChain, the same chain every
// client uses when given no credentials), then STS GetCallerIdentity signed
// with what the chain found. Nothing is configured in code: the region comes
// from AWS_REGION and the STS endpoint from AWS_ENDPOINT_URL_STS, as a user
// would set them. It prints what it obtained as JSON so the end-to-end tests
// can compare it with what the fake AWS issued; test/harness runs it with
// NODE_PATH set to hack/install-test-deps.sh's npm install.
"use strict";

const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");

async function main() {
  const credentials = fromNodeProviderChain();
  const creds = await credentials();
  const sts = new STSClient({ credentials, maxAttempts: 1 });
  const id = await sts.send(new GetCallerIdentityCommand({}));
  return {
    AccessKeyId: creds.accessKeyId,
    SecretAccessKey: creds.secretAccessKey,
    SessionToken: creds.sessionToken,
    Expiration: creds.expiration ? creds.expiration.toISOString() : "",
    Arn: id.Arn,
  };
}

main().then(
  (out) => process.stdout.write(JSON.stringify(out) + "\n"),
  (err) => {
    process.stdout.write(JSON.stringify({ Error: `${err.name}: ${err.message}` }) + "\n");
    process.exitCode = 1;
  },
);
