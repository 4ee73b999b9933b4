package node

import "syscall"

// signatureHint explains the errors of a module signature the kernel
// refused; they exist only on Linux.
func signatureHint(errno syscall.Errno) string {
	switch errno {
	case syscall.ENOKEY:
		return "the module is unsigned or signed by a key the kernel does not trust (Secure Boot or module.sig_enforce); sign it with spec.moduleLoader.container.sign and enroll the key"
	case syscall.EKEYREJECTED:
		return "the kernel rejected the module's signature; sign it again with a key the kernel trusts"
	}
	return ""
}
