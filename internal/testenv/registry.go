package testenv

import (
	"os"
	"testing"
)

// Registries are the docker-registry servers hack/lib/services.sh starts.
type Registries struct {
	// Plain is host:port of a registry speaking plain HTTP.
	Plain string
	// TLS is host:port of a registry with TLS and htpasswd authentication.
	TLS string
	// CAFile is the PEM file of the CA that signed TLS's certificate.
	CAFile string
	// User and Password are accepted by TLS.
	User, Password string
}

// Registry returns the test registries, or stops the test as Need does.
func Registry(t testing.TB) Registries {
	t.Helper()
	r := Registries{
		Plain: os.Getenv("KMMKIT_REGISTRY"), TLS: os.Getenv("KMMKIT_REGISTRY_TLS"), CAFile: os.Getenv("KMMKIT_REGISTRY_CA"),
		User: os.Getenv("KMMKIT_REGISTRY_USER"), Password: os.Getenv("KMMKIT_REGISTRY_PASSWORD"),
	}
	Need(t, "docker-registry servers", r.Plain != "" && r.TLS != "" && r.CAFile != "",
		"KMMKIT_REGISTRY, KMMKIT_REGISTRY_TLS and KMMKIT_REGISTRY_CA are not set; hack/test.sh starts them")
	return r
}
