package depmod

import (
	"fmt"
	"sync"

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

// logger formats kmod's messages onto a logr.Logger. It serialises calls,
// so parallel parts of a run never interleave inside the caller's sink,
// and a buffered logger keeps a part's messages until they can be written
// in a fixed order.
type logger struct {
	log logr.Logger
	mu  sync.Mutex
	// buf, when not nil, collects messages instead of writing them.
	buf *[]logEntry
}

// logEntry is a held message: level -1 is an error.
type logEntry struct {
	level int
	msg   string
}

func (l *logger) emit(level int, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf != nil {
		*l.buf = append(*l.buf, logEntry{level, msg})
		return
	}
	if level < 0 {
		l.log.Error(nil, msg)
	} else {
		l.log.V(level).Info(msg)
	}
}

func (l *logger) enabled(level int) bool { return l.log.V(level).Enabled() }

// buffered returns a logger that holds its messages until flush.
func (l *logger) buffered() *logger {
	return &logger{log: l.log, buf: &[]logEntry{}}
}

// flush writes a buffered logger's messages to parent.
func (l *logger) flush(parent *logger) {
	for _, e := range *l.buf {
		parent.emit(e.level, e.msg)
	}
	*l.buf = nil
}

func (l *logger) errorf(format string, args ...any) {
	l.emit(-1, fmt.Sprintf(format, args...))
}

func (l *logger) warnf(format string, args ...any) {
	l.emit(LevelWarning, fmt.Sprintf(format, args...))
}

func (l *logger) infof(format string, args ...any) {
	if l.enabled(LevelInfo) {
		l.emit(LevelInfo, fmt.Sprintf(format, args...))
	}
}

func (l *logger) debugf(format string, args ...any) {
	if l.enabled(LevelDebug) {
		l.emit(LevelDebug, fmt.Sprintf(format, args...))
	}
}
