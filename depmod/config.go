package depmod

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DefaultConfigPaths are where kmod 30's depmod reads depmod.d
// configuration, in order. They are host paths: -b does not rebase them.
func DefaultConfigPaths() []string {
	return []string{"/etc/depmod.d", "/run/depmod.d", "/usr/local/lib/depmod.d", "/lib/depmod.d"}
}

// searchEntry is one element of the search list.
type searchEntry struct {
	builtin  bool
	external bool
	path     string // relative to the module directory
}

// config is the merged depmod.d configuration. Every list is in reverse
// declaration order, as kmod builds it by pushing on the front.
type config struct {
	searches  []searchEntry
	overrides []string
	externals []string
	excludes  map[string]bool
}

// loadConfig reads the configuration files at paths for kernel kver.
func loadConfig(paths []string, kver string, log *logger) *config {
	cfg := &config{excludes: map[string]bool{}}
	sawSearch := false
	for _, file := range configFiles(paths, log) {
		data, err := os.ReadFile(file)
		if err != nil {
			log.errorf("could not open '%s' for reading: %v", file, err)
			continue
		}
		for _, l := range configLines(data) {
			fields := strings.FieldsFunc(l.text, func(r rune) bool { return r == ' ' || r == '\t' })
			if len(fields) == 0 {
				continue
			}
			cmd, args := fields[0], fields[1:]
			bad := func() { log.errorf("%s:%d: ignoring bad line starting with '%s'", file, l.number, cmd) }
			switch cmd {
			case "search":
				sawSearch = true
				for _, a := range args {
					e := searchEntry{path: a}
					switch a {
					case "built-in":
						e = searchEntry{builtin: true}
					case "external":
						e = searchEntry{external: true}
					}
					cfg.searches = append([]searchEntry{e}, cfg.searches...)
				}
			case "override":
				if len(args) < 3 {
					bad()
					continue
				}
				if !kverMatches(args[1], kver) {
					log.infof("%s:%d: override kernel did not match %s", file, l.number, args[1])
					continue
				}
				cfg.overrides = append([]string{args[2] + "/" + args[0]}, cfg.overrides...)
			case "external":
				if len(args) < 2 {
					bad()
					continue
				}
				if !kverMatches(args[0], kver) {
					log.infof("%s:%d: external directory did not match %s", file, l.number, args[0])
					continue
				}
				cfg.externals = append([]string{args[1]}, cfg.externals...)
			case "exclude":
				if len(args) == 0 {
					bad()
					continue
				}
				for _, a := range args {
					cfg.excludes[a] = true
				}
			case "include", "make_map_files":
				log.infof("%s:%d: command %s not implemented yet", file, l.number, cmd)
			default:
				bad()
			}
		}
	}
	if !sawSearch {
		cfg.searches = []searchEntry{{path: "updates"}}
	}
	return cfg
}

// kverMatches applies a kernel pattern of override or external: "*", or a
// POSIX extended regexp searched anywhere in kver. A pattern that does not
// compile never matches.
func kverMatches(pattern, kver string) bool {
	if pattern == "*" {
		return true
	}
	re, err := regexp.CompilePOSIX(pattern)
	return err == nil && re.MatchString(kver)
}

// configFiles lists the configuration files of paths: each file as given,
// each directory's *.conf files, merged and sorted by base name, with the
// first location winning a base name.
func configFiles(paths []string, log *logger) []string {
	byBase := map[string]string{}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			log.debugf("could not stat %s: %v", p, err)
			continue
		}
		if !st.IsDir() {
			base := filepath.Base(p)
			if _, ok := byBase[base]; !ok {
				byBase[base] = p
			}
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			log.debugf("could not read %s: %v", p, err)
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			if len(name) < 6 || !strings.HasSuffix(name, ".conf") {
				log.infof("All config files need .conf: %s/%s, it will be ignored in a future release", p, name)
				continue
			}
			full := filepath.Join(p, name)
			if st, err := os.Stat(full); err == nil && st.IsDir() {
				log.errorf("Directories inside directories are not supported: %s", full)
				continue
			}
			if _, ok := byBase[name]; !ok {
				byBase[name] = full
			}
		}
	}
	bases := make([]string, 0, len(byBase))
	for b := range byBase {
		bases = append(bases, b)
	}
	sort.Strings(bases)
	files := make([]string, len(bases))
	for i, b := range bases {
		files[i] = byBase[b]
	}
	return files
}

// configLine is a logical configuration line and the number of its first
// physical line.
type configLine struct {
	text   string
	number int
}

// configLines joins backslash-continued lines, drops other backslashes
// (keeping the character after them), and skips empty lines and lines
// starting with "#".
func configLines(data []byte) []configLine {
	var out []configLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var cur strings.Builder
	start, n := 0, 0
	pending := false
	for sc.Scan() {
		n++
		if !pending {
			start = n
		}
		line := sc.Text()
		cont := false
		for i := 0; i < len(line); i++ {
			if line[i] == '\\' {
				if i+1 == len(line) {
					cont = true
					break
				}
				i++
			}
			cur.WriteByte(line[i])
		}
		if cont {
			pending = true
			continue
		}
		pending = false
		text := cur.String()
		cur.Reset()
		if text == "" || text[0] == '#' {
			continue
		}
		out = append(out, configLine{text: text, number: start})
	}
	if pending && cur.Len() > 0 && cur.String()[0] != '#' {
		out = append(out, configLine{text: cur.String(), number: start})
	}
	return out
}
