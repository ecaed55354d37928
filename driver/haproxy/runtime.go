package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// maxAnswer bounds one answer of the runtime API: a stats page of a few
// thousand servers fits many times over.
const maxAnswer = 16 << 20

// Runtime speaks HAProxy's runtime API ("stats socket ... level admin"),
// one command per connection: HAProxy answers and closes, so an answer's
// end is never guessed.
type Runtime struct {
	// Addr is a unix socket path, or host:port of a TCP socket.
	Addr string
	// Timeout bounds one command, connecting included.
	Timeout time.Duration
}

// UnreachableError says the runtime API could not be reached or did not
// answer in time.
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("HAProxy runtime API %s is unreachable: %v", e.Addr, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// AnswerError is an answer HAProxy gave that is not the one the command
// succeeds with: its own error message, or something unexpected.
type AnswerError struct {
	Command, Answer string
}

func (e *AnswerError) Error() string {
	a := strings.TrimSpace(e.Answer)
	if len(a) > 200 {
		a = a[:200] + "..."
	}
	if a == "" {
		a = "(nothing)"
	}
	return fmt.Sprintf("HAProxy answered %q with %q", e.Command, a)
}

func (r *Runtime) network() string {
	if strings.HasPrefix(r.Addr, "/") || strings.HasPrefix(r.Addr, "@") || !strings.Contains(r.Addr, ":") {
		return "unix"
	}
	return "tcp"
}

// Do sends one command and returns HAProxy's whole answer, without the
// empty line that ends it.
func (r *Runtime) Do(ctx context.Context, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\n;") {
		return "", fmt.Errorf("runtime API command %q: one command per call, without ';' or a newline", cmd)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, r.network(), r.Addr)
	if err != nil {
		return "", &UnreachableError{Addr: r.Addr, Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", &UnreachableError{Addr: r.Addr, Err: err}
	}
	raw, err := io.ReadAll(io.LimitReader(conn, maxAnswer+1))
	if err != nil {
		return "", &UnreachableError{Addr: r.Addr, Err: fmt.Errorf("reading the answer to %q: %w", cmd, err)}
	}
	if len(raw) > maxAnswer {
		return "", &AnswerError{Command: cmd, Answer: fmt.Sprintf("more than %d bytes", maxAnswer)}
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\n"), nil
}

// expect runs cmd and checks that its answer is want (after trimming).
func (r *Runtime) expect(ctx context.Context, cmd, want string) error {
	a, err := r.Do(ctx, cmd)
	if err != nil {
		return err
	}
	if strings.TrimSpace(a) != want {
		return &AnswerError{Command: cmd, Answer: a}
	}
	return nil
}

// Info returns "show info" as name to value.
func (r *Runtime) Info(ctx context.Context) (map[string]string, error) {
	a, err := r.Do(ctx, "show info")
	if err != nil {
		return nil, err
	}
	info := map[string]string{}
	for line := range strings.Lines(a) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if ok {
			info[k] = v
		}
	}
	if info["Name"] == "" || info["Pid"] == "" {
		return nil, &AnswerError{Command: "show info", Answer: a}
	}
	return info, nil
}

// MapEntry is one line of a map: a key and its value.
type MapEntry struct{ Key, Value string }

// ShowMap returns a map's entries in HAProxy's order.
func (r *Runtime) ShowMap(ctx context.Context, path string) ([]MapEntry, error) {
	cmd := "show map " + path
	a, err := r.Do(ctx, cmd)
	if err != nil {
		return nil, err
	}
	var out []MapEntry
	for line := range strings.Lines(a) {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[0], "0x") {
			return nil, &AnswerError{Command: cmd, Answer: a}
		}
		out = append(out, MapEntry{Key: f[1], Value: f[2]})
	}
	return out, nil
}

// ReplaceMap replaces a map's whole content at once: prepare map gives a
// new version, the entries are added to it, and commit map makes it the
// one lookups see, atomically (HAProxy 2.4 and later).
func (r *Runtime) ReplaceMap(ctx context.Context, path string, entries []MapEntry) error {
	ver, err := r.PrepareMap(ctx, path, entries)
	if err != nil {
		return err
	}
	return r.CommitMap(ctx, path, ver)
}

// PrepareMap makes a new version of a map holding entries, which lookups
// do not see until CommitMap: prepare map, then add map @version for
// each entry. It returns the version.
func (r *Runtime) PrepareMap(ctx context.Context, path string, entries []MapEntry) (string, error) {
	cmd := "prepare map " + path
	a, err := r.Do(ctx, cmd)
	if err != nil {
		return "", err
	}
	ver, ok := strings.CutPrefix(strings.TrimSpace(a), "New version created: ")
	if _, perr := strconv.ParseUint(ver, 10, 32); !ok || perr != nil {
		return "", &AnswerError{Command: cmd, Answer: a}
	}
	for _, e := range entries {
		if err := r.expect(ctx, fmt.Sprintf("add map @%s %s %s %s", ver, path, e.Key, e.Value), ""); err != nil {
			return "", err
		}
	}
	return ver, nil
}

// CommitMap makes version ver of a map, from PrepareMap, the one lookups
// see, atomically.
func (r *Runtime) CommitMap(ctx context.Context, path, ver string) error {
	return r.expect(ctx, fmt.Sprintf("commit map @%s %s", ver, path), "")
}

// Server is one line of "show servers state".
type Server struct {
	Backend, Name string
	// Addr is host:port.
	Addr string
	// OpState is 0 stopped, 1 starting, 2 running, 3 stopping.
	OpState int
	// AdminState holds HAProxy's admin flags (maintenance, drain).
	AdminState int
	// Weight is the user weight (0: the server takes no traffic, whatever
	// its state).
	Weight int
	// InitWeight is the weight haproxy.cfg gave it (srv_iweight; 0 when
	// the answer has no such column).
	InitWeight int
}

// Admin flags of "show servers state" (HAProxy's SRV_ADMF_*).
const (
	adminForcedMaint = 0x01
	adminInheritMain = 0x02
	adminConfigMaint = 0x04
	adminForcedDrain = 0x08
	adminInheritDrn  = 0x10
	adminResolvMaint = 0x20
	adminHostMaint   = 0x40
	anyMaint         = adminForcedMaint | adminInheritMain | adminConfigMaint | adminResolvMaint | adminHostMaint
)

// ShowServers returns every server of every backend.
func (r *Runtime) ShowServers(ctx context.Context) ([]Server, error) {
	cmd := "show servers state"
	a, err := r.Do(ctx, cmd)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(strings.NewReader(a))
	sc.Buffer(make([]byte, 64<<10), maxAnswer)
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != "1" {
		return nil, &AnswerError{Command: cmd, Answer: a}
	}
	var cols map[string]int
	var out []Server
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if h, ok := strings.CutPrefix(line, "# "); ok {
			cols = map[string]int{}
			for i, name := range strings.Fields(h) {
				cols[name] = i
			}
			continue
		}
		f := strings.Fields(line)
		field := func(name string) (string, error) {
			i, ok := cols[name]
			if !ok || i >= len(f) {
				return "", &AnswerError{Command: cmd, Answer: "no " + name + " in: " + line}
			}
			return f[i], nil
		}
		number := func(name string) (int, error) {
			v, err := field(name)
			if err != nil {
				return 0, err
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, &AnswerError{Command: cmd, Answer: name + " is not a number in: " + line}
			}
			return n, nil
		}
		var s Server
		var host, port string
		var errs []error
		var e error
		s.Backend, e = field("be_name")
		errs = append(errs, e)
		s.Name, e = field("srv_name")
		errs = append(errs, e)
		host, e = field("srv_addr")
		errs = append(errs, e)
		port, e = field("srv_port")
		errs = append(errs, e)
		s.OpState, e = number("srv_op_state")
		errs = append(errs, e)
		s.AdminState, e = number("srv_admin_state")
		errs = append(errs, e)
		s.Weight, e = number("srv_uweight")
		errs = append(errs, e)
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		if _, ok := cols["srv_iweight"]; ok {
			if s.InitWeight, e = number("srv_iweight"); e != nil {
				return nil, e
			}
		}
		s.Addr = net.JoinHostPort(host, port)
		out = append(out, s)
	}
	return out, sc.Err()
}

// Stat is one server's line of "show stat": the figures vipswap reads.
type Stat struct {
	Backend, Name string
	// Addr is the server's host:port.
	Addr string
	// Status is HAProxy's: UP, DOWN, DRAIN, MAINT, "UP 1/3" while rising...
	Status string
	// Current is the sessions in flight now (scur).
	Current int64
	// Classes counts answers by status class (hrsp_1xx to hrsp_5xx; [0]
	// holds hrsp_other).
	Classes [6]uint64
	// ConnErrors and RespErrors are econ and eresp.
	ConnErrors, RespErrors uint64
	// TotalTime is ttime: the average time of the last 1024 requests, ms.
	TotalTime int64
	// ResponseTime is rtime: the average time of the last 1024 requests
	// from the request sent to the server to its response head, ms
	// (TotalTime when HAProxy does not report it).
	ResponseTime int64
	// CheckStatus is check_status (L7OK, L4CON...).
	CheckStatus string
}

// ShowStat returns every server's statistics.
func (r *Runtime) ShowStat(ctx context.Context) ([]Stat, error) {
	cmd := "show stat -1 4 -1" // every proxy, servers only
	a, err := r.Do(ctx, cmd)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(a, "\n")
	head, ok := strings.CutPrefix(lines[0], "# ")
	if !ok {
		return nil, &AnswerError{Command: cmd, Answer: a}
	}
	cols := map[string]int{}
	for i, name := range strings.Split(head, ",") {
		cols[name] = i
	}
	for _, need := range []string{"pxname", "svname", "addr", "status", "scur", "hrsp_2xx", "econ", "eresp", "ttime", "check_status"} {
		if _, ok := cols[need]; !ok {
			return nil, &AnswerError{Command: cmd, Answer: "no column " + need + " in: " + head}
		}
	}
	var out []Stat
	for _, line := range lines[1:] {
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		get := func(name string) string {
			if i := cols[name]; i < len(f) {
				return f[i]
			}
			return ""
		}
		num := func(name string) uint64 {
			n, _ := strconv.ParseUint(get(name), 10, 64)
			return n
		}
		s := Stat{Backend: get("pxname"), Name: get("svname"), Addr: get("addr"), Status: get("status"), Current: int64(num("scur")),
			ConnErrors: num("econ"), RespErrors: num("eresp"), TotalTime: int64(num("ttime")), CheckStatus: get("check_status")}
		s.ResponseTime = s.TotalTime
		if _, ok := cols["rtime"]; ok {
			s.ResponseTime = int64(num("rtime"))
		}
		s.Classes[0] = num("hrsp_other")
		for c := 1; c <= 5; c++ {
			s.Classes[c] = num(fmt.Sprintf("hrsp_%dxx", c))
		}
		out = append(out, s)
	}
	return out, nil
}
