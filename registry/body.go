package registry

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// watch checks a response's size, notes what the transport learnt on it,
// and bounds the reads of its body: a read that makes no progress for the
// idle timeout fails, and a manifest or ping answer stops at the size
// limit. release ends the request's contexts; it runs when the body is
// closed.
func (t *retryTransport) watch(req *http.Request, resp *http.Response, first *http.Request, hops, attempts int,
	ctx context.Context, cancel context.CancelCauseFunc, release func()) (*http.Response, error) {
	limit := int64(-1)
	ping := isPingRequest(req)
	if ping || strings.Contains(req.URL.Path, "/manifests/") {
		limit = t.cfg.maxManifest
	}
	if ping && hops == 0 {
		t.cfg.pings.record(req.URL.Host, resp)
	}
	if limit >= 0 && resp.ContentLength > limit && resp.StatusCode/100 == 2 {
		discard(resp)
		release()
		return nil, &tooLargeError{url: plainURL(req.URL), size: resp.ContentLength, limit: limit}
	}
	a := &answer{
		contentType: mediaType(resp.Header.Get("Content-Type")),
		proven:      t.cfg.pings.proven(first.URL.Host),
		redirected:  req.URL.Host != first.URL.Host,
		attempts:    attempts,
	}
	if resp.Request != nil {
		resp.Request = resp.Request.WithContext(context.WithValue(resp.Request.Context(), answerKey{}, a))
	}
	resp.Body = &watchedBody{rc: resp.Body, ctx: ctx, cancel: cancel, release: release,
		idle: t.cfg.idle, limit: limit, url: plainURL(req.URL)}
	return resp, nil
}

func isPingRequest(req *http.Request) bool {
	return req.Method == http.MethodGet && strings.TrimSuffix(req.URL.Path, "/") == "/v2"
}

// watchedBody bounds the reads of a response body.
type watchedBody struct {
	rc      io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	release func()
	idle    time.Duration
	limit   int64 // -1: none
	n       int64
	url     string

	timer *time.Timer
	once  sync.Once
}

// Read implements io.Reader.
func (b *watchedBody) Read(p []byte) (int, error) {
	if b.limit >= 0 && b.n > b.limit {
		return 0, &tooLargeError{url: b.url, size: -1, limit: b.limit}
	}
	if b.idle > 0 {
		if b.timer == nil {
			b.timer = time.AfterFunc(b.idle, func() { b.cancel(&idleError{url: b.url, idle: b.idle}) })
		} else {
			b.timer.Reset(b.idle)
		}
	}
	n, err := b.rc.Read(p)
	if b.timer != nil {
		b.timer.Stop()
	}
	b.n += int64(n)
	if b.limit >= 0 && b.n > b.limit {
		return n, &tooLargeError{url: b.url, size: -1, limit: b.limit}
	}
	if err != nil && err != io.EOF {
		err = withCause(b.ctx, err)
	}
	return n, err
}

// Close implements io.Closer.
func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(func() {
		if b.timer != nil {
			b.timer.Stop()
		}
		b.cancel(nil)
		b.release()
	})
	return err
}
