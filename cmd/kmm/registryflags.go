package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// registryFlags are the flags of the commands that ask registries
// (image check, image lint, preflight).
type registryFlags struct {
	insecure, skipVerify           *bool
	caFile, dockerConfig, platform *string
	timeout, idle                  *time.Duration
}

// addRegistryFlags defines the registry flags on fs.
func addRegistryFlags(fs *flag.FlagSet) *registryFlags {
	return &registryFlags{
		insecure:     fs.Bool("insecure", false, "use plain HTTP (registryTLS.insecure)"),
		skipVerify:   fs.Bool("skip-tls-verify", false, "accept any server certificate (registryTLS.insecureSkipTLSVerify)"),
		caFile:       fs.String("ca-file", "", "PEM file of extra CA certificates"),
		dockerConfig: fs.String("docker-config", "", "Docker config.json (or .dockercfg) with the credentials"),
		platform:     fs.String("platform", "", "platform of the node, such as linux/arm64; for an index, its manifest decides"),
		timeout:      fs.Duration("timeout", registry.DefaultCheckTimeout, "give up on a registry check after this long"),
		idle:         fs.Duration("idle-timeout", registry.DefaultIdleTimeout, "give up when the registry sends nothing for this long"),
	}
}

// tls is the TLS options the flags ask for.
func (f *registryFlags) tls() v1beta1.TLSOptions {
	return v1beta1.TLSOptions{Insecure: *f.insecure, InsecureSkipTLSVerify: *f.skipVerify}
}

// client returns the registry client the flags configure.
func (f *registryFlags) client() (*registry.Client, error) {
	if *f.timeout <= 0 || *f.idle <= 0 {
		return nil, fmt.Errorf("--timeout and --idle-timeout must be positive")
	}
	opts := []registry.Option{registry.WithTimeouts(*f.timeout, 0), registry.WithIdleTimeout(*f.idle)}
	if *f.caFile != "" {
		pem, err := os.ReadFile(*f.caFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, registry.WithCABundle(pem))
	}
	return registry.NewClient(opts...)
}

// auth returns the credentials of --docker-config, and whether it was
// given.
func (f *registryFlags) auth() (registry.AuthInfo, bool, error) {
	if *f.dockerConfig == "" {
		return registry.AuthInfo{}, false, nil
	}
	data, err := os.ReadFile(*f.dockerConfig)
	if err != nil {
		return registry.AuthInfo{}, false, err
	}
	kc, err := registry.DockerConfigKeychain(data)
	if err != nil {
		return registry.AuthInfo{}, false, fmt.Errorf("%s: %w", *f.dockerConfig, err)
	}
	return registry.AuthInfo{Keychain: kc, Secrets: []string{*f.dockerConfig}}, true, nil
}

// dockerConfigData returns the content of --docker-config, or nil.
func (f *registryFlags) dockerConfigData() ([]byte, error) {
	if *f.dockerConfig == "" {
		return nil, nil
	}
	return os.ReadFile(*f.dockerConfig)
}

// parsePlatform returns --platform, or nil.
func (f *registryFlags) parsePlatform() (*v1.Platform, error) {
	if *f.platform == "" {
		return nil, nil
	}
	p, err := v1.ParsePlatform(*f.platform)
	if err != nil {
		return nil, fmt.Errorf("--platform: %w", err)
	}
	return p, nil
}

// request is the registry request for ref with the flags' TLS,
// credentials and platform.
func (f *registryFlags) request(ref string) (registry.Request, error) {
	req := registry.Request{Image: ref, TLS: f.tls()}
	auth, ok, err := f.auth()
	if err != nil {
		return req, err
	}
	if ok {
		req.Auth = auth
	}
	if req.Platform, err = f.parsePlatform(); err != nil {
		return req, err
	}
	return req, nil
}

// open checks ref and returns the registry client and the request for it
// that the flags configure; on a problem it says why on stderr, as cmd,
// and returns false.
func (f *registryFlags) open(cmd, ref string, stderr io.Writer) (*registry.Client, registry.Request, bool) {
	errs := v1beta1.ValidateImageReference(ref, field.NewPath("image"))
	for _, e := range errs {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, &registry.Error{Reason: registry.ReasonInvalid, Image: ref, Detail: e.Detail})
	}
	if len(errs) > 0 {
		return nil, registry.Request{}, false
	}
	client, err := f.client()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return nil, registry.Request{}, false
	}
	req, err := f.request(ref)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return nil, registry.Request{}, false
	}
	return client, req, true
}
