//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// work is what a target's processes did during one run, per request: the
// figures that do not depend on how busy the machine is.
type work struct {
	// syscalls by kind (see syscallKinds), and "all", per request; nil
	// when perf could not count them.
	syscalls map[string]float64
	// eagain counts reads that found nothing (EAGAIN), per request.
	eagain float64
	// user and sys are CPU time per request.
	user, sys time.Duration
	// voluntary and involuntary context switches per request.
	voluntary, involuntary float64
	// traced says perf counted this run's system calls, which slows every
	// system call: its CPU figures are not the target's own.
	traced bool
}

// syscallKinds group the system calls counted, in the report's order; what
// none of them names is "other" (all minus these).
var syscallKinds = []struct {
	kind  string
	calls []string
}{
	{"read", []string{"read", "readv", "recvfrom", "recvmsg"}},
	{"write", []string{"write", "writev", "sendto", "sendmsg", "sendfile64", "splice"}},
	{"epoll", []string{"epoll_wait", "epoll_pwait", "epoll_ctl"}},
	{"futex", []string{"futex"}},
}

// readsThatFail are the read calls whose EAGAIN results are counted.
var readsThatFail = []string{"read", "readv", "recvfrom", "recvmsg"}

// probe measures a target's work while a load runs. Start it, run the
// load, then call done with the number of requests the load completed.
type probe struct {
	pids     []int
	perf     *exec.Cmd
	out      bytes.Buffer
	u0, s0   time.Duration
	vol0, i0 int64
}

// perfOK says whether perf can count system calls here; checked once.
var perfOK = func() bool {
	if _, err := exec.LookPath("perf"); err != nil {
		return false
	}
	return exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true").Run() == nil
}()

// startProbe starts measuring t's processes; with count, perf counts their
// system calls too.
func startProbe(t *target, count bool) *probe {
	p := &probe{pids: t.pids()}
	if len(p.pids) == 0 {
		return p
	}
	if !perfOK || !count {
		p.u0, p.s0 = cpuOf(p.pids)
		p.vol0, p.i0 = switchesOf(p.pids)
		return p
	}
	ids := make([]string, len(p.pids))
	for i, pid := range p.pids {
		ids[i] = strconv.Itoa(pid)
	}
	args := []string{"stat", "-x,", "-p", strings.Join(ids, ","), "-e", "raw_syscalls:sys_enter"}
	for _, k := range syscallKinds {
		for _, c := range k.calls {
			args = append(args, "-e", "syscalls:sys_enter_"+c)
		}
	}
	for _, c := range readsThatFail {
		args = append(args, "-e", "syscalls:sys_exit_"+c, "--filter", "ret == -11")
	}
	p.perf = exec.Command("perf", args...)
	p.perf.Stderr = &p.out
	if err := p.perf.Start(); err == nil {
		// perf attaches to every thread before it counts; what the
		// target does meanwhile is idle work, a few system calls.
		time.Sleep(300 * time.Millisecond)
	} else {
		p.perf = nil
	}
	p.u0, p.s0 = cpuOf(p.pids)
	p.vol0, p.i0 = switchesOf(p.pids)
	return p
}

// done stops the probe and returns the work per request over n requests.
func (p *probe) done(n float64) work {
	var w work
	if p.perf != nil {
		p.perf.Process.Signal(syscall.SIGINT)
		if err := p.perf.Wait(); err != nil && p.out.Len() == 0 {
			p.perf = nil
		}
	}
	if len(p.pids) == 0 || n <= 0 {
		return w
	}
	u, s := cpuOf(p.pids)
	v, i := switchesOf(p.pids)
	w.user, w.sys = time.Duration(float64(u-p.u0)/n), time.Duration(float64(s-p.s0)/n)
	w.voluntary, w.involuntary = float64(v-p.vol0)/n, float64(i-p.i0)/n
	if p.perf == nil {
		return w
	}
	w.traced = true
	counts := map[string]float64{}
	for _, line := range strings.Split(p.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		counts[f[2]] += v
	}
	all, ok := counts["raw_syscalls:sys_enter"]
	if !ok {
		return w
	}
	w.syscalls = map[string]float64{"all": all / n}
	named := 0.0
	for _, k := range syscallKinds {
		sum := 0.0
		for _, c := range k.calls {
			sum += counts["syscalls:sys_enter_"+c]
		}
		named += sum
		w.syscalls[k.kind] = sum / n
	}
	w.syscalls["other"] = (all - named) / n
	for _, c := range readsThatFail {
		w.eagain += counts["syscalls:sys_exit_"+c] / n
	}
	return w
}

// cpuOf sums the processes' user and system CPU time so far.
func cpuOf(pids []int) (user, sys time.Duration) {
	var u, s int64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		rest := string(raw)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) > 12 {
			a, _ := strconv.ParseInt(f[11], 10, 64)
			b, _ := strconv.ParseInt(f[12], 10, 64)
			u, s = u+a, s+b
		}
	}
	tick := time.Second / 100 // USER_HZ
	return time.Duration(u) * tick, time.Duration(s) * tick
}

// switchesOf sums the voluntary and involuntary context switches of every
// thread of the processes.
func switchesOf(pids []int) (voluntary, involuntary int64) {
	for _, pid := range pids {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(raw), "\n") {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					voluntary += n
				} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					involuntary += n
				}
			}
		}
	}
	return voluntary, involuntary
}

// medianWork returns the median of each figure over the runs.
func medianWork(ws []work) work {
	if len(ws) == 0 {
		return work{}
	}
	// System calls from the runs perf counted; CPU and context switches
	// from the others when there are any (perf slows every system call).
	var counted, clean []work
	for _, w := range ws {
		if w.syscalls != nil {
			counted = append(counted, w)
		}
		if !w.traced {
			clean = append(clean, w)
		}
	}
	if len(clean) == 0 {
		clean = ws
	}
	med := func(ws []work, f func(work) float64) float64 {
		v := make([]float64, 0, len(ws))
		for _, w := range ws {
			v = append(v, f(w))
		}
		return medianOf(v)
	}
	m := work{
		user:        time.Duration(med(clean, func(w work) float64 { return float64(w.user) })),
		sys:         time.Duration(med(clean, func(w work) float64 { return float64(w.sys) })),
		voluntary:   med(clean, func(w work) float64 { return w.voluntary }),
		involuntary: med(clean, func(w work) float64 { return w.involuntary }),
	}
	if len(counted) > 0 {
		m.eagain = med(counted, func(w work) float64 { return w.eagain })
		m.syscalls = map[string]float64{}
		for _, k := range append([]string{"all", "other"}, kindNames()...) {
			m.syscalls[k] = med(counted, func(w work) float64 { return w.syscalls[k] })
		}
	}
	return m
}

func kindNames() []string {
	names := make([]string, len(syscallKinds))
	for i, k := range syscallKinds {
		names[i] = k.kind
	}
	return names
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// printWork prints the work-per-request table of a scenario.
func printWork(targets []*target, results map[string][]result, notRun map[string]string, per string) {
	fmt.Printf("\nWork per %s, medians: system calls counted by perf's tracepoints in the first round, which slows each call; CPU (/proc/PID/stat) and context switches (every thread's /proc status) from the other rounds, when there are:\n\n", per)
	fmt.Println("| target | syscalls | read | of which EAGAIN | write | epoll | futex | other | CPU user | CPU sys | ctx switches (vol + invol) | RSS per connection under load |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range targets {
		if _, ok := notRun[t.name]; ok || t.pid == 0 {
			continue
		}
		var ws []work
		var mem []float64
		for _, r := range results[t.name] {
			ws = append(ws, r.work)
			mem = append(mem, r.perConn)
		}
		w := medianWork(ws)
		sc := func(k string) string {
			if w.syscalls == nil {
				return "-"
			}
			return fmt.Sprintf("%.2f", w.syscalls[k])
		}
		eagain := "-"
		if w.syscalls != nil {
			eagain = fmt.Sprintf("%.2f", w.eagain)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f µs | %.1f µs | %.2f + %.2f | %.1f KiB |\n",
			t.name, sc("all"), sc("read"), eagain, sc("write"), sc("epoll"), sc("futex"), sc("other"),
			float64(w.user)/1e3, float64(w.sys)/1e3, w.voluntary, w.involuntary, medianOf(mem)/1024)
	}
}
