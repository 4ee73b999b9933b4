package depmod

import "testing"

func TestHashKeyVectors(t *testing.T) {
	// Vectors checked against kmod 30's output (reference §4.1).
	tests := []struct {
		key  string
		want uint32
	}{
		{"", 0x00000000},
		{"a", 0x115ea782},
		{"ab", 0x516b8b44},
		{"abc", 0xd2be198a},
		{"abcd", 0xdad8b8db},
		{"ext4", 0xe679ab16},
		{"snd_hda_intel", 0x6e4028a1},
		{"drm_dp_link_train_channel_eq_delay", 0xf0cb2800},
	}
	for _, tc := range tests {
		if got := hashKey(tc.key); got != tc.want {
			t.Errorf("hashKey(%q) = %#08x, want %#08x", tc.key, got, tc.want)
		}
	}
	if hashKey("snd_hda_intel")&511 != 161 || hashKey("ext4")&2047 != 790 {
		t.Error("bucket values differ from kmod's")
	}
}
