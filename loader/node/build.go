package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/bounded"
	"github.com/kmmkit/kmmkit/reason"
)

// Build identifies one build of a module: its srcversion (the checksum
// of its sources modpost stamps into .modinfo, and /sys/module/<m>/srcversion
// shows once loaded) and its version (MODULE_VERSION). An empty field is
// unknown: a module without MODULE_VERSION has neither.
type Build struct {
	SrcVersion, Version string
}

// BuildReader is a Kernel that reports which build of a loaded module
// runs, as LinuxKernel does from sysfs. With a Kernel that is not one,
// Load does not compare builds.
type BuildReader interface {
	// Build returns the build of the loaded module name; a field the
	// kernel does not show is empty.
	Build(name string) (Build, error)
}

// maxBuildFile bounds what Build reads of a srcversion or version file.
const maxBuildFile = 256

// Build implements BuildReader: it reads /sys/module/<name>/srcversion
// and /sys/module/<name>/version (under SysRoot), boundedly; a missing
// file is an unknown field.
func (k LinuxKernel) Build(name string) (Build, error) {
	return readBuild(k.sys(), name)
}

// readBuild reads a loaded module's build under sysRoot.
func readBuild(sysRoot, name string) (Build, error) {
	dir := filepath.Join(sysRoot, "module", name)
	var b Build
	for _, f := range []struct {
		file string
		to   *string
	}{{"srcversion", &b.SrcVersion}, {"version", &b.Version}} {
		data, err := bounded.ReadFile(filepath.Join(dir, f.file), maxBuildFile)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return Build{}, fmt.Errorf("reading the %s of %s: %w", f.file, name, err)
		}
		*f.to = strings.TrimSpace(string(data))
	}
	return b, nil
}

// fileBuild is the build a module file's .modinfo names.
func fileBuild(info []modfile.KV) Build {
	return Build{SrcVersion: infoValue(info, "srcversion"), Version: infoValue(info, "version")}
}

// differs compares the build of a module file with the loaded one's by
// srcversion when both are known, else by version when both are known;
// otherwise it cannot tell and reports no difference. It returns which
// field differs.
func (file Build) differs(live Build) (field string, differ bool) {
	switch {
	case file.SrcVersion != "" && live.SrcVersion != "":
		return "srcversion", file.SrcVersion != live.SrcVersion
	case file.Version != "" && live.Version != "":
		return "version", file.Version != live.Version
	}
	return "", false
}

// BuildMismatchError says the module in the kernel is another build than
// the image's file: it carries reason.ModuleBuildMismatch.
type BuildMismatchError struct {
	// Module is the module.
	Module string
	// Field is what was compared: "srcversion", or "version" when a
	// srcversion is unknown.
	Field string
	// File is the build of the image's module file; Loaded the build in
	// the kernel.
	File, Loaded Build
}

// Error implements error, naming both builds.
func (e *BuildMismatchError) Error() string {
	file, live := e.File.SrcVersion, e.Loaded.SrcVersion
	if e.Field == "version" {
		file, live = e.File.Version, e.Loaded.Version
	}
	return fmt.Sprintf("the kernel runs %s %s %s, the image's file has %s %s", e.Module, e.Field, live, e.Field, file)
}

// ReasonOf implements reason.Carrier.
func (e *BuildMismatchError) ReasonOf() reason.Reason { return reason.ModuleBuildMismatch }

var _ reason.Carrier = (*BuildMismatchError)(nil)

// buildMismatchHint is the hint of a BuildMismatchError.
const buildMismatchHint = "another build of the module is loaded: unload it first (or let kmmkit's upgrade do it)"

// liveBuild returns the build of a loaded module, when the kernel can
// tell (a BuildReader that answers).
func (n *Native) liveBuild(name string) (Build, bool) {
	r, ok := n.kernel.(BuildReader)
	if !ok {
		return Build{}, false
	}
	b, err := r.Build(name)
	return b, err == nil
}

// checkBuild fails when the loaded module of step s is another build than
// file, the build of its file.
func (n *Native) checkBuild(s Step, file Build) error {
	live, ok := n.liveBuild(s.Name)
	if !ok {
		return nil
	}
	return buildError(s, file, live)
}

// buildError is the error of step s whose file has build file and whose
// loaded module has build live, or nil when they do not differ.
func buildError(s Step, file, live Build) error {
	if field, differ := file.differs(live); differ {
		return &Error{Op: "load", Module: s.Name, Path: s.Path, Hint: buildMismatchHint,
			Err: &BuildMismatchError{Module: s.Name, Field: field, File: file, Loaded: live}}
	}
	return nil
}

// checkLoadedBuild fails when the loaded module of step s is another
// build than its file. A file that cannot be read is not checked here:
// the module is not loaded from it.
func (n *Native) checkLoadedBuild(s Step) error {
	live, ok := n.liveBuild(s.Name)
	if !ok || live == (Build{}) {
		return nil
	}
	file, err := n.readFileBuild(s)
	if err != nil {
		return nil
	}
	return buildError(s, file, live)
}

// readFileBuild reads the build of the module file of s.
func (n *Native) readFileBuild(s Step) (Build, error) {
	elf, _, err := n.files.read(s.Path)
	if err != nil {
		return Build{}, err
	}
	info, err := modfile.ParseInfo(elf)
	if err != nil {
		return Build{}, err
	}
	return fileBuild(info), nil
}
