package main

import (
	"fmt"
	"io"

	"github.com/sirupsen/logrus"
)

// newLogger builds the process logger; it is passed down, never global.
func newLogger(w io.Writer, format, level string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(w)
	switch format {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	case "text", "":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	default:
		return nil, fmt.Errorf("--log-format %q is unknown: use text or json", format)
	}
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q is unknown: use debug, info, warn or error", level)
	}
	log.SetLevel(lvl)
	return log, nil
}
