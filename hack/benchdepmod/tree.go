//go:build !windows

package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// kernelCommands are the commands the kernel's modules_install compresses
// modules with (scripts/Makefile.modinst), by compression.
var kernelCommands = map[string][]string{
	"zst": {"zstd", "-q", "-c"},
	"xz":  {"xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"},
}

// compressTree makes dst a copy of src with every .ko compressed, unless
// an earlier run made it already, and tells how it compressed.
func compressTree(src, dst, c string) (string, error) {
	argv := kernelCommands[c]
	_, err := exec.LookPath(argv[0])
	useCmd := err == nil
	how := strings.Join(argv[:len(argv)-1], " ")
	if !useCmd {
		how = "Go encoder set as " + how
	}
	stamp := filepath.Join(dst, ".benchdepmod-complete")
	if b, err := os.ReadFile(stamp); err == nil {
		return string(b), nil
	}
	fmt.Fprintf(os.Stderr, "benchdepmod: compressing %s into %s (%s), once\n", src, dst, how)
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	var jobs []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case strings.HasSuffix(p, ".ko"):
			jobs = append(jobs, rel)
			return nil
		}
		return link(p, target)
	})
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan string)
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rel := range next {
				if err := compressFile(filepath.Join(src, rel), filepath.Join(dst, rel)+"."+c, c, useCmd); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return "", firstErr
	}
	return how, os.WriteFile(stamp, []byte(how), 0o644)
}

// compressFile writes src compressed with c to dst.
func compressFile(src, dst, c string, useCmd bool) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	switch {
	case useCmd:
		argv := kernelCommands[c]
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(data), &out, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %v: %s", argv[0], src, err, stderr.Bytes())
		}
	case c == "zst":
		w, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return err
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			return err
		}
	case c == "xz":
		w, err := xz.WriterConfig{DictCap: 1 << 20, CheckSum: xz.CRC32}.NewWriter(&out)
		if err != nil {
			return err
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			return err
		}
	}
	return os.WriteFile(dst, out.Bytes(), 0o644)
}

// linkTree hard-links the files of src into dst.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Name() == ".benchdepmod-complete" {
			return nil
		}
		return link(p, target)
	})
}

// link hard-links p to target, or copies it.
func link(p, target string) error {
	if os.Link(p, target) == nil {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return os.WriteFile(target, data, 0o644)
}

// moduleExtensions counts the module files under dir by extension, as
// "4023 .ko.xz".
func moduleExtensions(dir string) string {
	n := map[string]int{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if i := strings.Index(d.Name(), ".ko"); i >= 0 {
				n[d.Name()[i:]]++
			}
		}
		return nil
	})
	var parts []string
	for ext, c := range n {
		parts = append(parts, fmt.Sprintf("%d %s", c, ext))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
