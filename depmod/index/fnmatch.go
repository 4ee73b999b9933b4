package index

// fnmatch reports whether name matches the shell pattern, as POSIX
// fnmatch(pattern, name, 0) does, which is how libkmod matches stored alias
// patterns: "*" matches any string, "/" and leading "." included; "?" any
// one character; "[...]" a bracket expression with "!" or "^" negation,
// ranges and [:class:] names; "\" quotes the next character. An
// unterminated "[" matches itself.
func fnmatch(pattern, name string) bool {
	var steps int
	return fnmatchSteps(pattern, name, &steps, -1)
}

// fnmatchSteps is fnmatch, adding to *steps the characters it looked at,
// bracket expressions counted by the length scanned. With limit >= 0 it
// gives up (reporting no match) once *steps passes limit.
func fnmatchSteps(pattern, name string, steps *int, limit int) bool {
	p, n := 0, 0
	starP, starN := -1, -1
	for n < len(name) {
		*steps++
		if limit >= 0 && *steps > limit {
			return false
		}
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				for p < len(pattern) && pattern[p] == '*' {
					p++
				}
				if p == len(pattern) {
					return true
				}
				starP, starN = p, n
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				ok, next, valid := matchBracket(pattern, p, name[n])
				if valid {
					*steps += next - p
				} else {
					*steps += len(pattern) - p // scanned to the end
				}
				if valid {
					if ok {
						p, n = next, n+1
						continue
					}
				} else if name[n] == '[' {
					p, n = p+1, n+1
					continue
				}
			case '\\':
				if p+1 < len(pattern) {
					if pattern[p+1] == name[n] {
						p, n = p+2, n+1
						continue
					}
				} else if name[n] == '\\' {
					p, n = p+1, n+1
					continue
				}
			default:
				if c == name[n] {
					p, n = p+1, n+1
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		p, n = starP, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
		*steps++
	}
	return p == len(pattern)
}

// matchBracket matches c against the bracket expression at pattern[start]
// ("["). It returns whether c matches, the index after the closing "]", and
// whether the expression is terminated at all.
func matchBracket(pattern string, start int, c byte) (matched bool, next int, valid bool) {
	i := start + 1
	negate := false
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(pattern) {
		if pattern[i] == ']' && !first {
			return matched != negate, i + 1, true
		}
		first = false
		if pattern[i] == '[' && i+1 < len(pattern) && pattern[i+1] == ':' {
			if end := indexFrom(pattern, i+2, ":]"); end >= 0 {
				if classMatch(pattern[i+2:end], c) {
					matched = true
				}
				i = end + 2
				continue
			}
		}
		lo := pattern[i]
		if lo == '\\' && i+1 < len(pattern) {
			i++
			lo = pattern[i]
		}
		i++
		hi := lo
		if i+1 < len(pattern) && pattern[i] == '-' && pattern[i+1] != ']' {
			hi = pattern[i+1]
			i += 2
			if hi == '\\' && i < len(pattern) {
				hi = pattern[i]
				i++
			}
		}
		if lo <= c && c <= hi {
			matched = true
		}
	}
	return false, 0, false
}

func indexFrom(s string, from int, sub string) int {
	for i := from; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// classMatch implements the POSIX character classes of the C locale.
func classMatch(class string, c byte) bool {
	isUpper := 'A' <= c && c <= 'Z'
	isLower := 'a' <= c && c <= 'z'
	isDigit := '0' <= c && c <= '9'
	switch class {
	case "alpha":
		return isUpper || isLower
	case "digit":
		return isDigit
	case "alnum":
		return isUpper || isLower || isDigit
	case "upper":
		return isUpper
	case "lower":
		return isLower
	case "space":
		return c == ' ' || '\t' <= c && c <= '\r'
	case "blank":
		return c == ' ' || c == '\t'
	case "punct":
		return c > ' ' && c < 0x7f && !(isUpper || isLower || isDigit)
	case "print":
		return c >= ' ' && c < 0x7f
	case "graph":
		return c > ' ' && c < 0x7f
	case "cntrl":
		return c < ' ' || c == 0x7f
	case "xdigit":
		return isDigit || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
	}
	return false
}
