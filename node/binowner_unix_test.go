//go:build !windows

package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpgradeBinaryOwner: a binary to upgrade to that another user owns,
// or that lies in a directory another user may write to (and so could
// replace it between the check and the start), is refused; one owned by
// root or vipswap's user in a directory only they write to, or in a
// sticky one such as /tmp, is taken.
func TestUpgradeBinaryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	const nobody = 65534
	root := t.TempDir()
	mk := func(dir string, dirMode os.FileMode, uid int) string {
		d := filepath.Join(root, dir)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, dirMode); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "vipswap")
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		path, want string
	}{
		{mk("mine", 0o755, 0), ""},
		{mk("sticky", 0o777|os.ModeSticky, 0), ""},
		{mk("theirs", 0o755, nobody), "belongs to another user"},
		{mk("open", 0o777, 0), "can be written by another user"},
		{mk("group", 0o775, 0), "can be written by another user"},
	}
	other := filepath.Join(root, "otherdir")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(other, "vipswap")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct{ path, want string }{p, "can be written by another user"})
	for _, c := range cases {
		_, err := upgradeBinary(c.path)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.path, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %q", c.path, err, c.want)
		}
	}
}
