package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/vstest"
)

// TestUpgradeTellsSystemdTheNewMainPID: under Type=notify (NOTIFY_SOCKET
// set, no --pid-file), vipswap says READY=1 once it serves, and after an
// upgrade the old process, still the service's main process, tells
// systemd the new one's PID (MAINPID=) before it exits: otherwise systemd
// would take the old process's exit for the service's end.
func TestUpgradeTellsSystemdTheNewMainPID(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	_, addrs := startStatic(t, 1)
	sock := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cfg := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(cfg, []byte(testConfig(dir, staticSlots(addrs))), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "vipswap.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the upgrade's new process joins the group
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("vipswap's log:\n%s", out)
		}
	})

	// next returns the next notification.
	next := func() string {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(60 * time.Second))
		buf := make([]byte, 4096)
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no notification from vipswap: %v", err)
		}
		return string(buf[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	var admin string
	vstest.WaitFor(t, 30*time.Second, func() error {
		out, _ := os.ReadFile(logPath)
		m := adminListeningRE.FindSubmatch(out)
		if m == nil {
			return errors.New("not listening yet")
		}
		admin = string(m[1])
		return nil
	})
	out, err := exec.Command(bin, "upgrade", "--admin", admin).CombinedOutput()
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	got := next()
	pid, err := strconv.Atoi(strings.TrimPrefix(got, "MAINPID="))
	if !strings.HasPrefix(got, "MAINPID=") || err != nil {
		t.Fatalf("after the upgrade systemd heard %q, want MAINPID=<the new process>", got)
	}
	if pid == cmd.Process.Pid {
		t.Fatalf("MAINPID=%d names the old process", pid)
	}
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || !strings.Contains(string(raw), "serve") {
		t.Fatalf("MAINPID=%d is no vipswap serve (%q, %v)", pid, raw, err)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the old process did not exit after the upgrade")
	}
	// The new process serves, and says nothing more to systemd of its own.
	st, err := client.New("http://" + admin).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		if l.Name == "prod" {
			if a := getSlot(httpClient, "http://"+l.Addr+"/api/test"); a.status != 200 {
				t.Fatalf("after the upgrade: %+v", a)
			}
		}
	}
}
