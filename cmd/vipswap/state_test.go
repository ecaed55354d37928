package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// serveFrom starts "vipswap serve -c cfgPath" with cwd as its working
// directory and returns it with a client of its admin API.
func serveFrom(t *testing.T, cwd, cfgPath string) (*vstest.Process, *client.Client) {
	t.Helper()
	p := vstest.Start(t, "/bin/sh", "-c", `cd "$1" && exec "$0" serve -c "$2"`, vstest.Binary(t), cwd, cfgPath)
	m := p.WaitLine(t, regexp.MustCompile(`msg=listening listener=admin addr=(\S+)`), 30*time.Second)
	return p, client.New("http://" + m[1])
}

// stop stops a vipswap with SIGTERM and waits for it.
func stop(t *testing.T, p *vstest.Process) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("vipswap exited %d", code)
	}
}

// runCmd runs one vipswap command (no --admin) and returns its exit code and
// output.
func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := vstest.Start(t, vstest.Binary(t), args...)
	return p.Wait(t, 60*time.Second), p.Output()
}

// TestRelativeStatePath: a relative state.path is relative to the
// configuration file, so vipswap started from another directory finds the
// same state; a new state is announced at warn level with its absolute
// path. Before, each working directory got its own state, silently, and
// prod went back to the configured slot.
func TestRelativeStatePath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	cfg := strings.Replace(testConfig(dir, staticSlots(addrs)), "path: "+filepath.Join(dir, "state.db"), "path: state.db", 1)
	cfgPath := filepath.Join(dir, "vipswap.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	first, c := serveFrom(t, t.TempDir(), cfgPath)
	if !strings.Contains(first.Output(), `level=WARN msg="new state: the state file holds no state yet, so it is seeded from the configuration's active slot" path=`+filepath.Join(dir, "state.db")+" active=blue") {
		t.Fatalf("no warning naming the new state file:\n%s", first.Output())
	}
	if _, err := c.Swap(context.Background(), wire.ChangeRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	stop(t, first)

	elsewhere := t.TempDir()
	again, c := serveFrom(t, elsewhere, cfgPath)
	st, err := c.Status(context.Background())
	if err != nil || st.Active != "green" || st.Revision != 2 {
		t.Fatalf("started from another directory: active %s revision %d (%v); want green at 2", st.Active, st.Revision, err)
	}
	if strings.Contains(again.Output(), "new state") {
		t.Fatalf("a second start announced a new state:\n%s", again.Output())
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Fatalf("vipswap wrote %v in its working directory", entries)
	}
}

// TestStateCommands: check, export and import a sound state file; refuse
// to work on a file a running vipswap holds; repair an empty file and one
// with an unreadable history entry, after which vipswap starts where it
// was, with the repair in its history.
func TestStateCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	cfg := testConfig(dir, staticSlots(addrs))
	cfgPath := filepath.Join(dir, "vipswap.yaml")
	state := filepath.Join(dir, "state.db")
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	ctx := context.Background()
	for range 3 {
		if _, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: "release"}); err != nil {
			t.Fatal(err)
		}
	}
	code, out := runCmd(t, "state", "check", "-c", cfgPath)
	if code != 1 || !strings.Contains(out, "state file "+state+" is locked by another vipswap process") {
		t.Fatalf("check while vipswap runs: exit %d:\n%s", code, out)
	}
	sw.Signal(t, syscall.SIGTERM)
	sw.Wait(t, 30*time.Second)

	code, out = runCmd(t, "state", "check", "-c", cfgPath)
	if code != 0 || !strings.Contains(out, "state file "+state+": sound") || !strings.Contains(out, "state: revision 4, active green, standby blue, previous blue") ||
		!strings.Contains(out, "history: 4 readable entries, ids 1 to 4") {
		t.Fatalf("check: exit %d:\n%s", code, out)
	}
	code, out = runCmd(t, "state", "export", "-c", cfgPath)
	var dump struct {
		Format   string
		Revision uint64
		State    struct{ Active string }
		History  []json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &dump); code != 0 || err != nil || dump.Format != "vipswap-state/1" || dump.Revision != 4 || dump.State.Active != "green" || len(dump.History) != 4 {
		t.Fatalf("export: exit %d, %v:\n%s", code, err, out)
	}
	dumpPath := filepath.Join(dir, "dump.json")
	os.WriteFile(dumpPath, []byte(out), 0o600)
	copyPath := filepath.Join(dir, "copy.db")
	if code, out := runCmd(t, "state", "import", "--file", copyPath, "--from", dumpPath); code != 0 || !strings.Contains(out, "revision 4, active green, 4 history entries") {
		t.Fatalf("import: exit %d:\n%s", code, out)
	}
	if code, out := runCmd(t, "state", "import", "--file", copyPath, "--from", dumpPath); code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("import over a file: exit %d:\n%s", code, out)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"format":"vipswap-state/1","revision":4,"state":{"active":"green","standby":"blue"},"history":[],"extra":1}`), 0o600)
	if code, out := runCmd(t, "state", "import", "--file", filepath.Join(dir, "bad.db"), "--from", filepath.Join(dir, "bad.json")); code != 1 || !strings.Contains(out, `unknown field "extra"`) {
		t.Fatalf("import of a bad dump: exit %d:\n%s", code, out)
	}

	t.Run("an unreadable history entry", func(t *testing.T) {
		db, err := bbolt.Open(state, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		key := binary.BigEndian.AppendUint64(nil, 2)
		if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("history")).Put(key, []byte("{garbage")) }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		code, out := runCmd(t, "serve", "-c", cfgPath)
		if code != 1 || !strings.Contains(out, "history entry 2 is unreadable") || !strings.Contains(out, "vipswap state repair") {
			t.Fatalf("serve on the damaged file: exit %d:\n%s", code, out)
		}
		code, out = runCmd(t, "state", "repair", "-c", cfgPath)
		if code != 0 || !strings.Contains(out, "state salvaged at revision 5 (active green, standby blue); 3 history entries salvaged") {
			t.Fatalf("repair: exit %d:\n%s", code, out)
		}
		sw := switchtest.Serve(t, dir, cfg)
		// The restart's own entry is written once vipswap serves: wait for it.
		var h []wire.HistoryEntry
		vstest.WaitFor(t, 10*time.Second, func() error {
			var err error
			if h, err = sw.Client.History(ctx, 100); err != nil {
				return err
			}
			if len(h) == 0 || h[0].Operation != "restart" {
				return fmt.Errorf("no restart entry yet: %d entries", len(h))
			}
			return nil
		})
		if sw.Active(t) != "green" || len(h) != 5 || h[1].Operation != "repair" || h[1].Revision != 5 || h[3].ID != 3 || h[4].ID != 1 {
			t.Fatalf("after the repair: active %s, history %+v", sw.Active(t), h)
		}
		stop(t, sw.Process)
	})

	t.Run("an empty file", func(t *testing.T) {
		os.WriteFile(state, nil, 0o600)
		code, out := runCmd(t, "state", "check", "-c", cfgPath)
		if code != 1 || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, "is empty (0 bytes)") {
			t.Fatalf("check: exit %d:\n%s", code, out)
		}
		code, out = runCmd(t, "state", "repair", "-c", cfgPath)
		if code != 1 || !strings.Contains(out, "run again with --active SLOT") {
			t.Fatalf("repair without --active: exit %d:\n%s", code, out)
		}
		if code, out := runCmd(t, "state", "repair", "-c", cfgPath, "--active", "purple"); code != 2 || !strings.Contains(out, `no slot "purple"`) {
			t.Fatalf("repair with an unknown slot: exit %d:\n%s", code, out)
		}
		code, out = runCmd(t, "state", "repair", "-c", cfgPath, "--active", "green")
		if code != 0 || !strings.Contains(out, "state rebuilt as asked at revision 1 (active green, standby blue)") || !strings.Contains(out, "kept at "+state+".damaged-") {
			t.Fatalf("repair --active green: exit %d:\n%s", code, out)
		}
		sw := switchtest.Serve(t, dir, cfg)
		if sw.Active(t) != "green" {
			t.Fatalf("after the repair prod follows %s, want green", sw.Active(t))
		}
		stop(t, sw.Process)
	})
}
