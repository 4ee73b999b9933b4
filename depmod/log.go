package depmod

import (
	"fmt"

	"github.com/go-logr/logr"
)

// Verbosity levels of depmod's logr messages, mirroring kmod's log levels:
// errors go to Logger.Error; warnings are V(0), kmod's default level;
// informational messages V(1) (depmod -v); debug messages V(2) (-vv).
const (
	LevelWarning = 0
	LevelInfo    = 1
	LevelDebug   = 2
)

// logger formats kmod's messages onto a logr.Logger.
type logger struct {
	log logr.Logger
}

func (l *logger) errorf(format string, args ...any) {
	l.log.Error(nil, fmt.Sprintf(format, args...))
}

func (l *logger) warnf(format string, args ...any) {
	l.log.V(LevelWarning).Info(fmt.Sprintf(format, args...))
}

func (l *logger) infof(format string, args ...any) {
	if l.log.V(LevelInfo).Enabled() {
		l.log.V(LevelInfo).Info(fmt.Sprintf(format, args...))
	}
}

func (l *logger) debugf(format string, args ...any) {
	if l.log.V(LevelDebug).Enabled() {
		l.log.V(LevelDebug).Info(fmt.Sprintf(format, args...))
	}
}
