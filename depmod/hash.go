package depmod

// hashKey is kmod's string hash (Paul Hsieh's SuperFastHash, as in kmod's
// shared/hash.c), computed in uint32 arithmetic with little-endian 16-bit
// loads and, as in kmod 30, the odd trailing byte read as a signed char.
// The bucket of a key is hashKey(key) & (buckets-1); kmod's iteration order
// over its tables (bucket, then strcmp) decides the order of modules and of
// modules.symbols.
func hashKey(key string) uint32 {
	n := len(key)
	if n == 0 {
		return 0
	}
	h := uint32(n)
	u16 := func(i int) uint32 { return uint32(key[i]) | uint32(key[i+1])<<8 }
	signed := func(i int) uint32 { return uint32(int32(int8(key[i]))) }
	i := 0
	for ; n-i >= 4; i += 4 {
		h += u16(i)
		t := (u16(i+2) << 11) ^ h
		h = (h << 16) ^ t
		h += h >> 11
	}
	switch n - i {
	case 3:
		h += u16(i)
		h ^= h << 16
		h ^= signed(i+2) << 18
		h += h >> 11
	case 2:
		h += u16(i)
		h ^= h << 11
		h += h >> 17
	case 1:
		h += signed(i)
		h ^= h << 10
		h += h >> 1
	}
	h ^= h << 3
	h += h >> 5
	h ^= h << 4
	h += h >> 17
	h ^= h << 25
	h += h >> 6
	return h
}
