package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
)

const stateUsage = `usage: vipswap state <check|export|import|repair> [-c vipswap.yaml | --file STATE]

  check    read the whole state file and report what it holds, or what is damaged
  export   print the state and the history as JSON
  import   create a new state file from such JSON (--from FILE, default standard input)
  repair   salvage what is readable into a new file in its place; the damaged
           file is kept beside it (--active SLOT [--standby SLOT] when the
           state itself is unreadable)

The state file is state.path of the configuration (-c, default ./vipswap.yaml),
or --file. Run these with vipswap stopped: a running vipswap holds the file.`

// stateCmd is "vipswap state ...": the state file without a running
// vipswap.
func stateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, stateUsage)
		if len(args) == 0 {
			return &usageError{msg: "missing check, export, import or repair"}
		}
		return nil
	}
	sub := args[0]
	fs := newFlags("state "+sub, stderr)
	cfgPath := fs.String("c", "vipswap.yaml", "configuration file: its state.path is the state file")
	file := fs.String("file", "", "the state file itself, instead of the configuration's")
	var from, active, standby *string
	switch sub {
	case "check", "export":
	case "import":
		from = fs.String("from", "-", "the JSON of vipswap state export ('-': standard input)")
	case "repair":
		active = fs.String("active", "", "when the state is unreadable: the slot prod follows")
		standby = fs.String("standby", "", "when the state is unreadable: the slot stage follows (default: the first other slot of the configuration)")
	default:
		return &usageError{msg: fmt.Sprintf("unknown state command %q (want check, export, import or repair)", sub)}
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	path, cfg, err := statePath(fs, *cfgPath, *file)
	if err != nil {
		return err
	}
	switch sub {
	case "check":
		return stateCheck(stdout, path)
	case "export":
		d, err := bolt.Export(path)
		if err != nil {
			return err
		}
		return writeJSON(stdout, d)
	case "import":
		return stateImport(stdout, path, *from)
	default:
		return stateRepair(stdout, path, cfg, *active, *standby)
	}
}

// statePath returns the state file the command works on, and the
// configuration when one was read.
func statePath(fs *flag.FlagSet, cfgPath, file string) (string, *config.Config, error) {
	explicitC := false
	fs.Visit(func(f *flag.Flag) { explicitC = explicitC || f.Name == "c" })
	if file != "" {
		if explicitC {
			return "", nil, &usageError{msg: "-c and --file do not go together"}
		}
		return file, nil, nil
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", nil, err
	}
	return cfg.State.Path, cfg, nil
}

func stateCheck(w io.Writer, path string) error {
	r, err := bolt.Check(path)
	var damaged *bolt.DamagedError
	if err != nil && !errors.As(err, &damaged) {
		return err
	}
	verdict := "sound"
	if err != nil {
		verdict = "DAMAGED"
	}
	fmt.Fprintf(w, "state file %s: %s, %d bytes\n", r.Path, verdict, r.Size)
	if st := r.State; st != nil {
		extra := ""
		if st.Previous != "" {
			extra += ", previous " + st.Previous
		}
		if n := len(st.Drained); n > 0 {
			extra += fmt.Sprintf(", %d drained", n)
		}
		fmt.Fprintf(w, "  state: revision %d, active %s, standby %s%s\n", r.Revision, printable(st.Active), printable(st.Standby), printable(extra))
	} else if err == nil {
		fmt.Fprintln(w, "  state: none yet (vipswap seeds it from the configuration's active slot)")
	}
	if r.Entries > 0 {
		fmt.Fprintf(w, "  history: %d readable entries, ids %d to %d\n", r.Entries, r.FirstID, r.LastID)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", printable(p))
	}
	return err
}

func stateImport(w io.Writer, path, from string) error {
	var in io.Reader = os.Stdin
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(io.LimitReader(in, 1<<30))
	if err != nil {
		return fmt.Errorf("read %s: %w", from, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d store.Dump
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("import %s: not the JSON of vipswap state export: %w", from, err)
	}
	if dec.More() {
		return fmt.Errorf("import %s: more than one JSON value", from)
	}
	if err := bolt.Import(path, d); err != nil {
		return err
	}
	fmt.Fprintf(w, "imported into %s: revision %d, active %s, %d history entries\n", path, d.Revision, printable(d.State.Active), len(d.History))
	return nil
}

func stateRepair(w io.Writer, path string, cfg *config.Config, active, standby string) error {
	var rebuild *state.State
	if active != "" {
		st := state.State{Active: active, Standby: standby}
		if cfg != nil {
			if !slices.Contains(cfg.SlotOrder, active) {
				return &usageError{msg: fmt.Sprintf("--active: no slot %q in %s (have %s)", active, path, strings.Join(cfg.SlotOrder, ", "))}
			}
			if standby == "" {
				seed, err := state.Seed(active, cfg.SlotOrder)
				if err != nil {
					return &usageError{msg: err.Error()}
				}
				st.Standby = seed.Standby
			}
		}
		if st.Standby == "" || st.Standby == st.Active {
			return &usageError{msg: "--standby: name the slot stage follows, other than --active"}
		}
		rebuild = &st
	} else if standby != "" {
		return &usageError{msg: "--standby goes with --active"}
	}
	r, err := bolt.Repair(path, rebuild, time.Now())
	if errors.Is(err, bolt.ErrNoState) {
		return fmt.Errorf("%w: run again with --active SLOT (and --standby SLOT) to say which slot prod follows", err)
	}
	if err != nil {
		return err
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "damage: %s\n", printable(p))
	}
	how := "salvaged"
	if r.Rebuilt {
		how = "rebuilt as asked"
	}
	fmt.Fprintf(w, "repaired %s: state %s at revision %d (active %s, standby %s); %d history entries salvaged\n",
		path, how, r.Revision, printable(r.State.Active), printable(r.State.Standby), r.Salvaged)
	fmt.Fprintf(w, "the damaged file is kept at %s\n", r.Aside)
	return nil
}
