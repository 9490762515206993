package credentials

import (
	"fmt"

	"github.com/aws/smithy-go/logging"
	"github.com/sirupsen/logrus"
)

// SDKLogger routes the AWS SDK's own log lines (retries, IMDSv1 fallback,
// clock skew) through the process logger, so --log-format json stays one
// JSON object per line. The SDK's default logger writes plain "SDK … WARN"
// lines to stderr. Give it to every awsconfig.Load. The SDK logs no
// request bodies unless ClientLogMode asks it to, which kube2ra never
// does: no secret reaches these lines.
func SDKLogger(log logrus.FieldLogger) logging.Logger {
	log = log.WithField("component", "aws-sdk")
	return logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		msg := fmt.Sprintf(format, v...)
		switch c {
		case logging.Warn:
			log.Warn(msg)
		case logging.Debug:
			log.Debug(msg)
		default:
			log.WithField("classification", string(c)).Info(msg)
		}
	})
}
