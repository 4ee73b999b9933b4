package main

import (
	"context"
	"fmt"
	"io"

	"github.com/kmmkit/kmmkit/builder/signfile"
)

// runSignFile implements "kmm sign-file", a drop-in for the kernel's
// scripts/sign-file: kmm sign-file HASH KEY CERT MODULE [DEST].
func runSignFile(_ context.Context, args []string, _ io.Reader, _, stderr io.Writer) int {
	if len(args) < 4 || len(args) > 5 {
		fmt.Fprintln(stderr, "usage: kmm sign-file <hash algo> <key> <x509> <module> [<dest>]\n\n"+
			"Appends a PKCS#7 signature to a kernel module, byte-identical to the kernel's sign-file for RSA keys.")
		return exitError
	}
	hash, err := signfile.ParseHash(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "kmm sign-file: %v\n", err)
		return exitError
	}
	signer, err := signfile.LoadSigner(hash, args[1], args[2])
	if err != nil {
		fmt.Fprintf(stderr, "kmm sign-file: %v\n", err)
		return exitError
	}
	dest := ""
	if len(args) == 5 {
		dest = args[4]
	}
	if err := signer.SignFile(args[3], dest); err != nil {
		fmt.Fprintf(stderr, "kmm sign-file: %v\n", err)
		return exitError
	}
	return exitOK
}
