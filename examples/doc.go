// Package examples holds runnable examples of kmmkit and the KMM Module
// manifests they use (modules/). Run the current one with:
//
//	go run ./cmd/kmm map -f examples/modules/kmm-ci-a.yaml --kernel 6.1.0-56-amd64
package examples
