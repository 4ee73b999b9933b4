// Package vmtest boots a real Linux kernel in qemu (TCG, no KVM needed)
// with an initramfs the test builds, and returns what the VM printed on
// its serial console. Tests use it to load kernel modules for real, which
// the test host's kernel cannot do.
package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"
)

// File is one file of the initramfs.
type File struct {
	Data []byte
	Mode os.FileMode // 0 means 0644
}

// Initramfs writes files (by absolute path in the VM) as a cpio "newc"
// archive, adding their parent directories.
func Initramfs(files map[string]File) []byte {
	var buf bytes.Buffer
	ino := 1
	dirs := map[string]bool{}
	var paths []string
	for p := range files {
		paths = append(paths, p)
		for d := filepath.Dir(p); d != "/" && d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	sort.Strings(paths)
	entry := func(name string, mode uint32, data []byte) {
		name = name[1:] // archive names are relative
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		buf.WriteString(name)
		buf.WriteByte(0)
		pad(&buf)
		buf.Write(data)
		pad(&buf)
	}
	for _, d := range dirList {
		entry(d, 0o040755, nil)
	}
	for _, p := range paths {
		mode := files[p].Mode
		if mode == 0 {
			mode = 0o644
		}
		entry(p, 0o100000|uint32(mode.Perm()), files[p].Data)
	}
	fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0)
	buf.WriteString("TRAILER!!!\x00")
	pad(&buf)
	return buf.Bytes()
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// Boot runs kernel with initrd under qemu-system-x86_64 until the VM
// powers off or timeout passes, and returns the serial console output.
func Boot(ctx context.Context, qemu, kernel string, initrd []byte, timeout time.Duration) (string, error) {
	dir, err := os.MkdirTemp("", "kmmkit-vm")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	initrdPath := filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrdPath, initrd, 0o600); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "512",
		"-kernel", kernel, "-initrd", initrdPath,
		"-nographic", "-no-reboot", "-nic", "none", "-monitor", "none", "-serial", "stdio",
		"-append", "console=ttyS0 panic=-1 loglevel=4 quiet")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("the VM did not power off within %v", timeout)
	}
	if err != nil {
		return out.String(), fmt.Errorf("qemu: %w", err)
	}
	return out.String(), nil
}
