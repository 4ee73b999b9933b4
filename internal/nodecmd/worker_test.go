package nodecmd

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// tlsModuleImage pushes a module image for kver and returns the
// registries, the image, the basic auth of the TLS registry's user and the
// CA that signed its certificate.
func tlsModuleImage(t *testing.T, kver string) (regs testenv.Registries, ref, auth string, ca []byte) {
	t.Helper()
	regs = testenv.Registry(t)
	ref = pushModuleImage(t, regs, kver)
	auth = base64.StdEncoding.EncodeToString([]byte(regs.User + ":" + regs.Password))
	ca, err := os.ReadFile(regs.CAFile)
	require.NoError(t, err)
	return regs, ref, auth, ca
}

// pushModuleImage pushes to the authenticated test registry a kmod image
// holding one module, indexed, under /opt/lib/modules/<kver>.
func pushModuleImage(t *testing.T, regs testenv.Registries, kver string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib", "modules", kver, "extra")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	mod := elftest.Module{Modinfo: []string{"name=kmmkit_pull", "vermagic=" + kver + " SMP preempt mod_unload modversions "}}.Bytes()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kmmkit_pull.ko"), mod, 0o644))
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: root, KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
	files := map[string][]byte{}
	require.NoError(t, filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files["opt/"+rel] = data
		return err
	}))
	img, err := crane.Image(files)
	require.NoError(t, err)
	ref := fmt.Sprintf("%s/kmmkit-worker-%d/mod:%s", regs.TLS, rand.Uint32(), kver)
	r, err := name.ParseReference(ref)
	require.NoError(t, err)
	require.NoError(t, remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: regs.User, Password: regs.Password}),
		remote.WithTransport(insecureTransport())))
	return ref
}

// TestWorkerPullsWithEitherPullSecretFormat runs `kmm worker load` as the
// worker Pod does, with the pull secret mounted whole: a legacy
// kubernetes.io/dockercfg secret (.dockercfg) works as a
// kubernetes.io/dockerconfigjson one does. The test machine's kernel
// cannot load modules, so success is getting past the pull to the loader.
func TestWorkerPullsWithEitherPullSecretFormat(t *testing.T) {
	regs := testenv.Registry(t)
	const kver = "6.1.0-57-amd64"
	ref := pushModuleImage(t, regs, kver)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("kernelVersion: "+kver+"\ncontainerImage: "+ref+"\nmodprobe: {moduleName: kmmkit_pull}\n"), 0o644))
	auth := base64.StdEncoding.EncodeToString([]byte(regs.User + ":" + regs.Password))
	secrets := map[string]map[string]string{
		"dockercfg":        {".dockercfg": fmt.Sprintf(`{%q:{"auth":%q}}`, regs.TLS, auth)},
		"dockerconfigjson": {".dockerconfigjson": fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, regs.TLS, auth)},
		"wrong password":   {".dockercfg": fmt.Sprintf(`{%q:{"auth":%q}}`, regs.TLS, base64.StdEncoding.EncodeToString([]byte(regs.User+":nope")))},
		"no key":           {"token": "x"},
	}
	results := map[string]string{}
	for name, keys := range secrets {
		secretDir := filepath.Join(dir, "secret-"+name)
		require.NoError(t, os.MkdirAll(secretDir, 0o755))
		for k, v := range keys {
			require.NoError(t, os.WriteFile(filepath.Join(secretDir, k), []byte(v), 0o600))
		}
		code, _, stderr := runWorker(t, Env{}, "load", "--config", cfgFile, "--pull-dir", filepath.Join(dir, "pull-"+name),
			"--docker-config", secretDir, "--ca-file", regs.CAFile)
		assert.Equal(t, cli.ExitError, code)
		results[name] = stderr
	}
	t.Logf("worker said: %q", results)
	for _, name := range []string{"dockercfg", "dockerconfigjson"} {
		assert.Contains(t, results[name], "this kernel cannot load modules", "%s: pulled, then the loader ran: %s", name, results[name])
	}
	assert.Contains(t, results["wrong password"], "Unauthorized")
	assert.Contains(t, results["no key"], "has neither .dockerconfigjson nor .dockercfg: it must be of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg")
}

// TestWorkerTrustsTheImageCABundle: the CA bundle `kmm image worker
// --ca-bundle` lays in the worker image lets the worker pull from a
// registry that CA signed, with no --ca-file; without it the pull fails on
// TLS and says so.
func TestWorkerTrustsTheImageCABundle(t *testing.T) {
	const kver = "6.1.0-57-amd64"
	regs, ref, auth, ca := tlsModuleImage(t, kver)
	for _, withBundle := range []bool{true, false} {
		root := t.TempDir()
		write := func(p string, data []byte) {
			require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(root, p), data, 0o644))
		}
		write("etc/kmm-worker/config.yaml", []byte("kernelVersion: "+kver+"\ncontainerImage: "+ref+"\nmodprobe: {moduleName: kmmkit_pull}\n"))
		write("var/run/kmmkit/pull-secret/.dockerconfigjson", fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, regs.TLS, auth))
		if withBundle {
			write(ImageCABundle, ca)
		}
		code, _, stderr := runWorker(t, Env{Root: root}, "load", "--config", "/etc/kmm-worker/config.yaml", "--pull-dir", "/var/run/kmmkit/images",
			"--docker-config", "/var/run/kmmkit/pull-secret")
		assert.Equal(t, cli.ExitError, code)
		if withBundle {
			assert.Contains(t, stderr, "this kernel cannot load modules", "pulled, then the loader ran: %s", stderr)
			continue
		}
		assert.Contains(t, stderr, "TLSError", stderr)
		assert.Contains(t, stderr, "certificate signed by unknown authority")
	}
}
