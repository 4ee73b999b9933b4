//go:build linux

// Package buildahlib runs kmmkit's buildah builder with buildah as a
// library (github.com/containers/buildah) instead of the buildah command:
// the same builds, in-process, with no buildah binary installed.
//
// It is kmmkit's only cgo part, so it lives in its own Go module: nothing
// else in kmmkit links it. Build it with the tags that drop the graph
// drivers and the GPG library buildah would otherwise need C headers for:
//
//	go build -tags 'containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper'
//
// At run time it needs runc's helpers only for the oci isolation; the
// default chroot isolation needs root and /etc/containers/policy.json
// (Debian: apt-get install golang-github-containers-common, which buildah
// pulls in). Call Init first thing in main, and in TestMain: chroot
// isolation re-executes the binary.
package buildahlib

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/containers/buildah"
	"github.com/containers/buildah/define"
	"github.com/containers/buildah/imagebuildah"
	"github.com/containers/image/v5/transports/alltransports"
	"github.com/containers/image/v5/types"
	"github.com/containers/storage"
	"github.com/containers/storage/pkg/reexec"
	"golang.org/x/sys/unix"

	kbuildah "github.com/kmmkit/kmmkit/builder/buildah"
)

// Init runs buildah's re-executed helper when this process is one, and
// then reports true: main must return at once. Call it before anything
// else.
func Init() bool { return reexec.Init() }

// New returns the buildah builder running buildah in-process: the
// builder of kbuildah.New with opts, its Runner replaced by buildah's
// library (WithBinary is not used then). It fails as kbuildah.New does.
func New(opts ...kbuildah.Option) (*kbuildah.Builder, error) {
	return kbuildah.New(append(opts, kbuildah.WithRunner(Runner{}))...)
}

// Runner is a kbuildah.Runner on buildah's library.
type Runner struct{}

var _ kbuildah.Runner = Runner{}

// Run implements kbuildah.Runner.
func (Runner) Run(ctx context.Context, job kbuildah.Job) (string, error) {
	store, err := storage.GetStore(storage.StoreOptions{GraphDriverName: job.StorageDriver, GraphRoot: job.Root, RunRoot: job.RunRoot})
	if err != nil {
		return "", fmt.Errorf("buildah storage at %s: %w", job.Root, err)
	}
	defer func() { _, _ = store.Shutdown(false) }()
	isolation, err := parseIsolation(job.Isolation)
	if err != nil {
		return "", err
	}
	args := map[string]string{}
	for _, a := range job.Args {
		args[a.Name] = a.Value
	}
	pull := &types.SystemContext{
		DockerInsecureSkipTLSVerify: types.NewOptionalBool(!job.PullTLSVerify),
		AuthFilePath:                job.AuthFile,
		DockerCertPath:              job.CertDir,
	}
	opts := define.BuildOptions{
		ContextDirectory:        job.ContextDir,
		PullPolicy:              define.PullIfMissing,
		Isolation:               isolation,
		Args:                    args,
		Out:                     job.Log,
		Err:                     job.Log,
		ReportWriter:            job.Log,
		OutputFormat:            define.OCIv1ImageManifest,
		SystemContext:           pull,
		CommonBuildOpts:         &define.CommonBuildOptions{Volumes: job.Volumes, Ulimit: currentUlimits()},
		RemoveIntermediateCtrs:  true,
		ForceRmIntermediateCtrs: true,
	}
	id, _, err := imagebuildah.BuildDockerfiles(ctx, store, opts, job.Dockerfile)
	if err != nil {
		return "", fmt.Errorf("buildah build: %w", err)
	}
	defer func() { _, _ = store.DeleteImage(id, true) }()
	dest, err := alltransports.ParseImageName("docker://" + job.Request.Image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", job.Request.Image, err)
	}
	push := &types.SystemContext{
		DockerInsecureSkipTLSVerify: types.NewOptionalBool(!job.PushTLSVerify),
		AuthFilePath:                job.AuthFile,
		DockerCertPath:              job.CertDir,
	}
	_, digest, err := buildah.Push(ctx, id, dest, buildah.PushOptions{Store: store, SystemContext: push, ReportWriter: job.Log})
	if err != nil {
		return "", fmt.Errorf("buildah push %s: %w", job.Request.Image, err)
	}
	return digest.String(), nil
}

func parseIsolation(s string) (define.Isolation, error) {
	switch strings.ToLower(s) {
	case "", "chroot":
		return define.IsolationChroot, nil
	case "oci":
		return define.IsolationOCI, nil
	case "rootless":
		return define.IsolationOCIRootless, nil
	}
	return 0, fmt.Errorf("unknown buildah isolation %q (chroot, oci or rootless)", s)
}

// currentUlimits are this process's open-file and process limits, in
// buildah's name=SOFT:HARD form: RUN steps keep them, as the buildah
// command's do, instead of the library raising them to 1048576, which a
// container without CAP_SYS_RESOURCE refuses.
func currentUlimits() []string {
	var out []string
	for _, l := range []struct {
		name     string
		resource int
	}{{"nofile", unix.RLIMIT_NOFILE}, {"nproc", unix.RLIMIT_NPROC}} {
		var r unix.Rlimit
		if err := unix.Getrlimit(l.resource, &r); err != nil {
			continue // buildah's default then
		}
		out = append(out, fmt.Sprintf("%s=%s:%s", l.name, rlim(r.Cur), rlim(r.Max)))
	}
	return out
}

// rlim formats a limit for buildah's ulimit parser: -1 is unlimited.
func rlim(v uint64) string {
	if v == unix.RLIM_INFINITY || v > math.MaxInt64 {
		return "-1"
	}
	return strconv.FormatUint(v, 10)
}
