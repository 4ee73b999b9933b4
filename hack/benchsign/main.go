// Command benchsign signs every module of a kernel tree twice: in-process
// with kmmkit's signer, and with one kernel sign-file process per module
// (as KMM's sign pod does); it prints both times and their ratio, after
// checking that a sample of outputs is byte-identical.
//
//	go run ./hack/benchsign -tree ROOT [-sign-file PATH]
package main

import (
	"bytes"
	"crypto"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kmmkit/kmmkit/builder/signfile"
)

func main() {
	tree := flag.String("tree", os.Getenv("KMMKIT_KERNEL_TREE"), "unpacked linux-image package")
	signFile := flag.String("sign-file", "", "the kernel's sign-file (default: /usr/lib/linux-kbuild-*/scripts/sign-file)")
	flag.Parse()
	if err := run(*tree, *signFile); err != nil {
		fmt.Fprintln(os.Stderr, "benchsign:", err)
		os.Exit(1)
	}
}

func run(tree, signFile string) error {
	if signFile == "" {
		m, _ := filepath.Glob("/usr/lib/linux-kbuild-*/scripts/sign-file")
		if len(m) == 0 {
			return fmt.Errorf("no sign-file found; install linux-kbuild")
		}
		signFile = m[0]
	}
	work, err := os.MkdirTemp("", "benchsign")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	key, cert := filepath.Join(work, "key.pem"), filepath.Join(work, "cert.pem")
	if out, err := exec.Command("openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "3650", "-batch", "-x509",
		"-subj", "/CN=benchsign", "-newkey", "rsa:4096", "-outform", "PEM", "-out", cert, "-keyout", key).CombinedOutput(); err != nil {
		return fmt.Errorf("openssl: %v: %s", err, out)
	}
	var mods []string
	filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			mods = append(mods, p)
		}
		return nil
	})
	if len(mods) == 0 {
		return fmt.Errorf("no .ko files under %q", tree)
	}
	signer, err := signfile.LoadSigner(crypto.SHA256, key, cert)
	if err != nil {
		return err
	}
	workers := runtime.GOMAXPROCS(0)
	parallel := func(fn func(i int) error) error {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		next := make(chan int)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := fn(i); err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
					}
				}
			}()
		}
		for i := range mods {
			next <- i
		}
		close(next)
		wg.Wait()
		return first
	}
	outDir := filepath.Join(work, "out")
	os.MkdirAll(outDir, 0o755)

	start := time.Now()
	if err := parallel(func(i int) error {
		return signer.SignFile(mods[i], filepath.Join(outDir, fmt.Sprintf("ours-%d.ko", i)))
	}); err != nil {
		return err
	}
	ours := time.Since(start)

	start = time.Now()
	if err := parallel(func(i int) error {
		out, err := exec.Command(signFile, "sha256", key, cert, mods[i], filepath.Join(outDir, fmt.Sprintf("kernel-%d.ko", i))).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", mods[i], err, out)
		}
		return nil
	}); err != nil {
		return err
	}
	theirs := time.Since(start)

	for i := 0; i < len(mods); i += max(1, len(mods)/50) {
		a, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("ours-%d.ko", i)))
		b, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("kernel-%d.ko", i)))
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s: our signed file differs from sign-file's", mods[i])
		}
	}
	fmt.Printf("signed %d modules (RSA 4096, sha256) with %d workers\n", len(mods), workers)
	fmt.Printf("kmmkit in-process:           %8.2f s\n", ours.Seconds())
	fmt.Printf("sign-file, one per module:   %8.2f s\n", theirs.Seconds())
	fmt.Printf("ratio kmmkit/sign-file: %.2f (outputs byte-identical on %d sampled modules)\n", ours.Seconds()/theirs.Seconds(), min(50, len(mods)))
	return nil
}
