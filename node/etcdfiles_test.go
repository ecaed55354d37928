package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/config"
)

// TestEtcdTLSFilesAreBounded: state.etcd's CA, certificate and key files
// are read as a listener's are: a path naming a device (/dev/zero) or a
// directory is refused in one line naming the key, where the whole file
// was read (and /dev/zero never ends).
func TestEtcdTLSFilesAreBounded(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero here")
	}
	dir := t.TempDir()
	ok := filepath.Join(dir, "x.pem")
	os.WriteFile(ok, []byte("x"), 0o600)
	for _, c := range []struct {
		tls  config.EtcdTLS
		want string
	}{
		{config.EtcdTLS{CA: "/dev/zero"}, "state.etcd.tls.ca: /dev/zero: want a regular file"},
		{config.EtcdTLS{CA: dir}, "state.etcd.tls.ca: " + dir + ": want a regular file"},
		{config.EtcdTLS{Cert: "/dev/zero", Key: ok}, "state.etcd.tls.cert: /dev/zero: want a regular file"},
		{config.EtcdTLS{Cert: ok, Key: "/dev/zero"}, "state.etcd.tls.key: /dev/zero: want a regular file"},
	} {
		_, err := etcdTLS(c.tls)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: got %v, want one line with %q", c.tls, err, c.want)
		}
	}
}
