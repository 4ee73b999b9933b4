package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/kmmkit/kmmkit/internal/safefs"
	"github.com/kmmkit/kmmkit/reason"
)

// extractError is an extraction failure that carries its reason.
type extractError struct {
	reason reason.Reason
	err    error
}

func (e *extractError) Error() string { return e.err.Error() }

func (e *extractError) Unwrap() error { return e.err }

// ReasonOf implements reason.Carrier.
func (e *extractError) ReasonOf() reason.Reason { return e.reason }

// unsafeEntry refuses the entry name of a layer.
func unsafeEntry(name, format string, args ...any) error {
	return &extractError{reason: reason.UnsafeImage,
		err: fmt.Errorf("%w %q: %s", ErrUnsafeEntry, name, fmt.Sprintf(format, args...))}
}

// corrupt reports a layer that does not match its digests.
func corrupt(format string, args ...any) error {
	return &extractError{reason: reason.ImageCorrupt,
		err: fmt.Errorf("%w: %s", ErrDigestMismatch, fmt.Sprintf(format, args...))}
}

// localFailure marks a failure of the local file system (disk full,
// read-only, permissions), which is neither the registry's nor the
// image's fault.
func localFailure(err error) error {
	if err == nil {
		return nil
	}
	return &extractError{reason: reason.LocalIOError, err: err}
}

// entryFailure classifies a failed file system operation on the entry
// name: a path that escapes, or that the image's own layout makes
// impossible (a file where a directory is needed, a link loop, a name too
// long), refuses the entry; anything else is a local I/O failure.
func entryFailure(name string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, safefs.ErrEscapes):
		return unsafeEntry(name, "its path leads outside the extraction directory through a symbolic link")
	case errors.As(err, &errno) && imageErrno(errno):
		return unsafeEntry(name, "cannot be created as the image lays it out: %v", err)
	case errors.Is(err, fs.ErrNotExist):
		return unsafeEntry(name, "%v", err)
	}
	return localFailure(err)
}

// imageErrno reports whether errno is caused by the layout of the image's
// entries rather than by the local file system.
func imageErrno(errno syscall.Errno) bool {
	switch errno {
	case syscall.ENOTDIR, syscall.EISDIR, syscall.ELOOP, syscall.ENAMETOOLONG, syscall.EEXIST,
		syscall.EMLINK, syscall.ENOTEMPTY, syscall.EINVAL:
		return true
	}
	return false
}
