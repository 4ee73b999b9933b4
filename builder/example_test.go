package builder_test

import (
	"context"
	"fmt"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/fake"
	"github.com/kmmkit/kmmkit/kernelmap"
)

// A build request comes from the record a Module resolves to for a
// kernel; any Builder backend then takes it to completion, one Sync at a
// time.
func ExampleNewRequest() {
	mapper, err := kernelmap.New()
	if err != nil {
		panic(err)
	}
	rec, err := mapper.Resolve(module(), "6.1.0-56-amd64")
	if err != nil {
		panic(err)
	}
	req, err := builder.NewRequest(rec, "ARG KERNEL_FULL_VERSION\nFROM scratch\n")
	if err != nil {
		panic(err)
	}
	var b builder.Builder = fake.New() // kaniko.New, openshift.New, buildah.New, assemble.New
	for {
		st, err := b.Sync(context.Background(), req)
		if err != nil {
			panic(err)
		}
		fmt.Println(st.Name, st.Phase)
		if st.Phase == builder.PhaseSucceeded || st.Final {
			break
		}
	}
	// Output:
	// nic-build-6-1-0-56-amd64 Running
	// nic-build-6-1-0-56-amd64 Succeeded
}
