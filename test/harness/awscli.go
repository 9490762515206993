package harness

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// DebianAWSCLI is the AWS CLI v2 from Debian's awscli package, which
// hack/install-test-deps.sh installs.
const DebianAWSCLI = "/usr/bin/aws"

// AWSCLIEnv is the environment a pod's AWS CLI runs with: nothing configured
// but the region, so credentials can only come from the metadata service.
func (e *Env) AWSCLIEnv() []string {
	return []string{"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_DEFAULT_REGION=" + e.Region(), "AWS_PAGER="}
}

// AWSCLI runs the AWS CLI v2 inside the pod with args and returns what it
// printed on stdout and stderr. err is non-nil when the CLI could not run or
// exited non-zero (then stderr usually says why, as it would to a user).
func (e *Env) AWSCLI(ctx context.Context, p *Pod, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	cmd := p.Net.Command(ctx, DebianAWSCLI, args...)
	cmd.Env = append(e.clientEnv(), e.AWSCLIEnv()...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		err = fmt.Errorf("harness: running %s in pod %s/%s: %w (apt-get install awscli, or make test-deps)", DebianAWSCLI, p.Namespace, p.Name, err)
	}
	return out.String(), errOut.String(), err
}
