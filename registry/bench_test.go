package registry

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkCheck1000Refs200Images checks 1,000 references spread over 200
// distinct images (100 exist, 100 do not) from 16 goroutines against the
// in-process registry, and reports the requests the registry received per
// op: manifest requests (the goal is 200: one per distinct image) and blob
// HEADs (the goal is 200: config and layer of each of the 100 images that
// exist, each blob once), and checks per second.
func BenchmarkCheck1000Refs200Images(b *testing.B) {
	reg := newTestRegistry(b, true, "", "")
	images := make([]string, 200)
	for i := range images {
		if i%2 == 0 {
			images[i] = reg.host + fmt.Sprintf("/kmm/bench%d:v1", i)
			reg.push(b, fmt.Sprintf("kmm/bench%d:v1", i), false)
		} else {
			images[i] = reg.host + fmt.Sprintf("/kmm/bench%d:missing", i)
		}
	}
	refs := make([]string, 1000)
	for i := range refs {
		refs[i] = images[(i*7)%len(images)]
	}
	var totalRequests, totalBlobs int64
	var totalChecks int
	start := time.Now()
	for b.Loop() {
		c, err := NewClient(WithCABundle(reg.caPEM()))
		if err != nil {
			b.Fatal(err)
		}
		reg.manifests.Store(0)
		reg.blobs.Store(0)
		var wg sync.WaitGroup
		next := make(chan string)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ref := range next {
					if _, err := c.Check(context.Background(), Request{Image: ref}); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for _, r := range refs {
			next <- r
		}
		close(next)
		wg.Wait()
		totalRequests += reg.manifests.Load()
		totalBlobs += reg.blobs.Load()
		totalChecks += len(refs)
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(totalRequests)/float64(b.N), "manifest-requests/op")
	b.ReportMetric(float64(totalBlobs)/float64(b.N), "blob-requests/op")
	b.ReportMetric(float64(totalChecks)/elapsed.Seconds(), "checks/s")
	b.Logf("%d distinct images, %d references: %.0f manifest and %.0f blob requests per run, %.0f checks/s",
		len(images), len(refs), float64(totalRequests)/float64(b.N), float64(totalBlobs)/float64(b.N), float64(totalChecks)/elapsed.Seconds())
	if totalRequests != int64(b.N)*int64(len(images)) {
		b.Errorf("%d manifest requests in %d runs, want one per distinct image", totalRequests, b.N)
	}
}
