package registry

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// AuthInfo is how a request authenticates: a keychain, and the names of
// the pull secrets it came from, which error messages name.
type AuthInfo struct {
	// Keychain resolves credentials; nil means anonymous.
	Keychain authn.Keychain
	// Secrets names the pull secrets behind Keychain, as "namespace/name".
	Secrets []string
	// Key identifies the credentials by what they are (a hash, never the
	// credentials themselves): requests with the same Key share cached
	// answers and connections, however often the keychain is rebuilt.
	// pullsecret.Keychain fills it. When it is empty, a KeyedKeychain's Key is
	// used (DockerConfigKeychain returns one); any other keychain is told
	// apart by its identity, so rebuilding it for every call makes every
	// call ask the registry.
	Key string
}

// KeyedKeychain is a keychain that names its credentials by content.
type KeyedKeychain interface {
	authn.Keychain
	// Key returns the same string for the same credentials and different
	// strings for different ones; it must not reveal them.
	Key() string
}

// dockerAuth is one registry's entry in a Docker config file.
type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// configKeychain resolves credentials from Docker config entries, keyed by
// registry host (optionally with a repository path prefix).
type configKeychain struct {
	entries map[string]dockerAuth
	sum     hash.Hash // over every document added, in order
}

func newConfigKeychain() *configKeychain {
	return &configKeychain{entries: map[string]dockerAuth{}, sum: sha256.New()}
}

// Key implements KeyedKeychain: a hash of the documents it was read from.
func (k *configKeychain) Key() string {
	return "dockerconfig:sha256:" + hex.EncodeToString(k.sum.Sum(nil))
}

// DockerConfigKeychain reads Docker config documents, each a
// config.json ({"auths": {...}}) or a legacy .dockercfg (the map alone),
// into one keychain: for the same registry key an earlier document's
// entry wins, and a more specific key (host/path) wins over a shorter
// one whichever document holds it. Its Key is a hash of the documents in
// order. An error names the document by its position (from 1) when there
// are several. Package registry/pullsecret reads Kubernetes pull secrets
// into it.
func DockerConfigKeychain(docs ...[]byte) (KeyedKeychain, error) {
	kc := newConfigKeychain()
	for i, data := range docs {
		if err := kc.add(data); err != nil {
			if len(docs) > 1 {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			return nil, err
		}
	}
	return kc, nil
}

// add merges a config.json or .dockercfg document; earlier entries win.
func (k *configKeychain) add(data []byte) error {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(data)))
	k.sum.Write(n[:])
	k.sum.Write(data)
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("not a Docker config: %w", err)
	}
	auths := map[string]dockerAuth{}
	if raw, ok := probe["auths"]; ok {
		if err := json.Unmarshal(raw, &auths); err != nil {
			return fmt.Errorf("bad \"auths\": %w", err)
		}
	} else if err := json.Unmarshal(data, &auths); err != nil {
		return fmt.Errorf("not a Docker config: %w", err)
	}
	for host, a := range auths {
		if a.Auth != "" && a.Username == "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return fmt.Errorf("entry %q: auth is not base64: %w", host, err)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return fmt.Errorf("entry %q: auth is not user:password", host)
			}
			a.Username, a.Password = user, pass
		}
		key := normalizeRegistryKey(host)
		if _, dup := k.entries[key]; !dup {
			k.entries[key] = a
		}
	}
	return nil
}

// normalizeRegistryKey strips a scheme, a trailing slash and Docker Hub's
// legacy forms from a config key.
func normalizeRegistryKey(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	k = strings.TrimSuffix(k, "/")
	// "docker login" writes API-version paths, which name no repository.
	k = strings.TrimSuffix(strings.TrimSuffix(k, "/v1"), "/v2")
	switch k {
	case "index.docker.io/v1", "index.docker.io", "registry-1.docker.io", "docker.io":
		return "index.docker.io"
	}
	return k
}

// Resolve implements authn.Keychain: the longest key matching the
// repository ("host/path" prefix) wins, then the host alone.
func (k *configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	host := normalizeRegistryKey(target.RegistryStr())
	full := host
	if r, ok := target.(interface{ RepositoryStr() string }); ok {
		full = host + "/" + r.RepositoryStr()
	}
	best, bestLen := dockerAuth{}, -1
	for key, a := range k.entries {
		if (full == key || strings.HasPrefix(full, key+"/") || host == key) && len(key) > bestLen {
			best, bestLen = a, len(key)
		}
	}
	if bestLen < 0 {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: best.Username, Password: best.Password,
		IdentityToken: best.IdentityToken, RegistryToken: best.RegistryToken,
	}), nil
}
