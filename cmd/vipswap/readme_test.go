package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// readmeCommand is one command of README.md, with what the README says it
// prints.
type readmeCommand struct {
	line int    // in README.md
	cmd  string // as a shell runs it (continuations joined, comment cut)
	// want are the README's expected output lines (the "# ..." lines
	// below the command) and the "key":"value" pairs its comment shows.
	want  []string
	pairs []string
}

// readmeBlocks returns the commands of README.md's ```sh blocks, in order,
// but the first block (the two commands that start vipswap and run the
// tests) and blocks that follow a "<!-- not run by the README test -->"
// line.
func readmeBlocks(t *testing.T) (first []string, cmds []readmeCommand) {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	pair := regexp.MustCompile(`"[a-z_]+":"[^"…]+"`)
	blocks, skip := 0, false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.Contains(l, "<!-- not run by the README test") {
			skip = true
			continue
		}
		if l != "```sh" {
			continue
		}
		blocks++
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			l := lines[i]
			switch {
			case blocks == 1:
				first = append(first, l)
			case skip:
			case strings.HasPrefix(l, "#"):
				if n := len(cmds); n > 0 {
					cmds[n-1].want = append(cmds[n-1].want, strings.TrimSpace(strings.TrimPrefix(l, "#")))
				}
			case strings.TrimSpace(l) != "":
				c := readmeCommand{line: i + 1}
				for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
					c.cmd += strings.TrimSuffix(l, "\\")
					i++
					l = lines[i]
				}
				c.cmd += l
				if j := strings.Index(c.cmd, "  #"); j >= 0 {
					c.pairs = pair.FindAllString(c.cmd[j:], -1)
					c.cmd = c.cmd[:j]
				}
				c.cmd = strings.TrimSpace(c.cmd)
				cmds = append(cmds, c)
			}
		}
		skip = false
	}
	return first, cmds
}

// shape turns an expected output line into a pattern: runs of blanks match
// any blanks, "…" anything, a number other than a lone 0 any number (and
// the word after it may be singular), a 0 only 0.
func shape(want string) *regexp.Regexp {
	want = strings.TrimSpace(strings.Split(want, "←")[0])
	var b strings.Builder
	num := regexp.MustCompile(`^[0-9][0-9.,]*`)
	for i := 0; i < len(want); {
		rest := want[i:]
		switch {
		case strings.HasPrefix(rest, "…"):
			b.WriteString(".*")
			i += len("…")
		case rest[0] == ' ':
			b.WriteString(`\s+`)
			for i < len(want) && want[i] == ' ' {
				i++
			}
		case num.MatchString(rest) && (i == 0 || !isWordByte(want[i-1])):
			n := num.FindString(rest)
			n = strings.TrimRight(n, ".,")
			i += len(n)
			if n == "0" {
				b.WriteString("0")
				break
			}
			b.WriteString(`[0-9][0-9.,]*`)
			// "4 requests" may be "1 request", and the other way.
			if m := regexp.MustCompile(`^ [a-z]+\b`).FindString(want[i:]); m != "" {
				b.WriteString(`\s+` + regexp.QuoteMeta(strings.TrimSuffix(m[1:], "s")) + "s?")
				i += len(m)
			}
		default:
			r := []rune(rest)[0]
			b.WriteString(regexp.QuoteMeta(string(r)))
			i += len(string(r))
		}
	}
	return regexp.MustCompile(b.String())
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// TestShape: what the README's expected lines match.
func TestShape(t *testing.T) {
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"swapped blue -> green (revision 2)", "swapped blue -> green (revision 12)", true},
		{"4 requests on prod, 0 failed", "1 request on prod, 0 failed", true},
		{"4 requests on prod, 0 failed", "10 requests on prod, 3 failed", false},
		{"deploy 20261205-…-1: slot blue", "deploy 20261206-171012-3: slot blue", true},
		{"ok     start     0.02s  2 × x", "ok     start     0.31s  2 × x", true},
		{"draining green: 1 request in flight (1s)          ← progress", "draining green: 2 requests in flight (3s)", true},
	} {
		if got := shape(c.want).MatchString(c.got); got != c.ok {
			t.Errorf("shape(%q) matching %q: %v, want %v (%s)", c.want, c.got, got, c.ok, shape(c.want))
		}
	}
}

// TestReadme runs README.md's commands in order, as a newcomer would,
// against the quickstart (on free ports, with a state file of its own):
// it fails on the first command that exits non-zero or does not print
// what the README says it prints.
func TestReadme(t *testing.T) {
	first, cmds := readmeBlocks(t)
	if len(first) != 2 || !strings.Contains(first[0], "serve -c examples/quickstart.yaml") || !strings.HasPrefix(first[1], "./scripts/test.sh") {
		t.Fatalf("README's first block is %q; want the quickstart's serve and ./scripts/test.sh", first)
	}
	if _, err := os.Stat("../../scripts/test.sh"); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile("../../.ci/run"); err != nil || !strings.Contains(string(data), "./scripts/test.sh") {
		t.Fatalf(".ci/run does not run the README's test command: %v", err)
	}

	// The quickstart, moved to free ports and a state file of its own;
	// the commands are moved with it.
	raw, err := os.ReadFile("../../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The ports of examples/quickstart.yaml and examples/https.yaml.
	ports := map[string]string{}
	for _, p := range []string{"8080", "8081", "9090", "8443", "8444", "9091"} {
		ports[p] = vstest.FreeAddr(t)
	}
	cfg := strings.ReplaceAll(string(raw), "path: vipswap-quickstart.db", "path: "+filepath.Join(dir, "state.db"))
	for port, addr := range ports {
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:"+port, addr)
	}
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	bin := filepath.Dir(vstest.Binary(t))
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "VIPSWAP_ADMIN="+sw.Admin)

	for _, c := range cmds {
		line := c.cmd
		for port, addr := range ports {
			line = regexp.MustCompile(`(localhost|127\.0\.0\.1):`+port+`\b`).ReplaceAllString(line, addr)
		}
		if strings.Contains(line, "PORT") {
			// "vipswap drain blue 127.0.0.1:PORT": an instance of the
			// slot the command names, copied from status.
			f := strings.Fields(line)
			line = strings.Replace(line, "127.0.0.1:PORT", instanceOf(t, sw, f[2]), 1)
		}
		if m := serveExample.FindStringSubmatch(line); m != nil {
			// A second vipswap on another example, in the background
			// as in a terminal; it is stopped when the test ends.
			serveReadmeExample(t, m[1], ports, dir)
			continue
		}
		if strings.HasSuffix(line, "&") {
			// In the background, as in a terminal: its output is not
			// waited for.
			cmd := exec.Command("sh", "-c", line)
			cmd.Env, cmd.Dir = env, "../.."
			if err := cmd.Run(); err != nil {
				t.Fatalf("README.md:%d: %s: %v", c.line, c.cmd, err)
			}
			if strings.HasPrefix(line, "curl ") {
				// A slow request the next command counts on being in
				// flight, as it is when a person types the next line.
				waitAnyInFlight(t, sw)
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		cmd.Env, cmd.Dir = env, "../.."
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("README.md:%d: %s\n%s", c.line, c.cmd, out)
		if err != nil {
			t.Fatalf("README.md:%d: %s: %v", c.line, c.cmd, err)
		}
		for _, w := range c.want {
			if !shape(w).Match(out) {
				t.Fatalf("README.md:%d: %s printed no line like %q:\n%s", c.line, c.cmd, w, out)
			}
		}
		for _, p := range c.pairs {
			if !strings.Contains(string(out), p) {
				t.Fatalf("README.md:%d: %s printed no %s:\n%s", c.line, c.cmd, p, out)
			}
		}
	}
}

// serveExample is a README command that starts vipswap on an example
// configuration in the background.
var serveExample = regexp.MustCompile(`^vipswap serve -c (examples/[a-z-]+\.yaml) &$`)

// serveReadmeExample starts "vipswap serve" on the example configuration
// file (relative to the checkout), moved to the test's free ports and a
// state file in dir, and waits until its instances are healthy. The moved
// copy sits beside the original, so the files it names (certificates) are
// found where the README put them.
func serveReadmeExample(t *testing.T, file string, ports map[string]string, dir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../..", file))
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`(?m)^(\s*path:\s*)\S+\.db$`).ReplaceAllString(string(raw), "${1}"+filepath.Join(dir, filepath.Base(file)+".db"))
	for port, addr := range ports {
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:"+port, addr)
	}
	moved := filepath.Join("../../examples", ".readme-"+filepath.Base(file))
	if err := os.WriteFile(moved, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(moved) })
	abs, err := filepath.Abs(moved)
	if err != nil {
		t.Fatal(err)
	}
	p := vstest.Start(t, vstest.Binary(t), "serve", "-c", abs)
	switchtest.Attach(t, p).WaitHealthy(t)
}

// waitAnyInFlight waits until an instance of sw has a request in flight.
func waitAnyInFlight(t *testing.T, sw *switchtest.Switch) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		for _, s := range st.Slots {
			for _, i := range s.Instances {
				if i.InFlight.Total() > 0 {
					return nil
				}
			}
		}
		return errors.New("no request in flight yet")
	})
}

// instanceOf returns the address of an instance of slot.
func instanceOf(t *testing.T, sw *switchtest.Switch, slot string) string {
	t.Helper()
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Slots {
		if s.Name == slot && len(s.Instances) > 0 {
			return s.Instances[0].Addr
		}
	}
	t.Fatalf("no instance of %s in status", slot)
	return ""
}
