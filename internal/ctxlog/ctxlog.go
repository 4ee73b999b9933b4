// Package ctxlog is kmmkit's one rule for where a component logs: to the
// logger its constructor was given (WithLogger), or else to the logger
// of the context of each call (logr.FromContextOrDiscard), as
// controller-runtime puts a reconcile's logger there.
package ctxlog

import (
	"context"

	"github.com/go-logr/logr"
)

// Logger is a logger a constructor may have been given. The zero value
// has none: each call logs to its context's.
type Logger struct {
	l   logr.Logger
	set bool
}

// Given returns the Logger of a WithLogger option.
func Given(l logr.Logger) Logger { return Logger{l: l, set: true} }

// Set says whether a logger was given.
func (l Logger) Set() bool { return l.set }

// Get returns the logger given, if any.
func (l Logger) Get() (logr.Logger, bool) { return l.l, l.set }

// From returns the logger given, or else ctx's (a discarding one when
// ctx has none).
func (l Logger) From(ctx context.Context) logr.Logger {
	if l.set {
		return l.l
	}
	return logr.FromContextOrDiscard(ctx)
}
