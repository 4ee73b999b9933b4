package depmod

import (
	"os"
)

// upToDate implements -A: true when modules.dep exists and no module file
// under dirname is newer than it, comparing whole seconds as kmod 30 does.
func upToDate(dirname, outdir string, exts []string, log *logger) bool {
	st, err := os.Stat(outdir + "/modules.dep")
	if err != nil {
		log.debugf("could not stat %s/modules.dep: %v", outdir, err)
		return false
	}
	depTime := st.ModTime().Unix()
	newer := false
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if newer || depth > maxWalkDepth {
			return
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			name := e.Name()
			if name == "build" || name == "source" {
				continue
			}
			path := dir + "/" + name
			st, err := os.Stat(path)
			if err != nil {
				continue
			}
			if st.IsDir() {
				walk(path, depth+1)
			} else if st.Mode().IsRegular() && isModuleFile(name, exts) && st.ModTime().Unix() > depTime {
				log.debugf("%s is newer than modules.dep", path)
				newer = true
			}
			if newer {
				return
			}
		}
	}
	walk(dirname, 0)
	return !newer
}
