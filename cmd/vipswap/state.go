package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/node"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
)

const stateLong = `Works on the state file with vipswap stopped (a running vipswap holds it):

  check    read the whole file and report what it holds, or what is damaged
  export   print the state and the history as JSON
  import   create a new state file from such JSON
  repair   salvage what is readable into a new file in its place; the damaged
           file is kept beside it

The state file is state.path of the configuration (-c, default ./vipswap.yaml),
or --file.

With state.etcd in the configuration, check, export and import work on the
etcd prefix instead, with the nodes running: check reports damaged keys,
export prints what is readable, and import --replace writes a state (and
history) the nodes then follow, in one transaction for the state. --from
also takes a node's local copy (state.etcd.local_copy), which holds the last
state that node served.`

func newStateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state check|export|import|repair",
		Short: "check, export, import or repair the state file (vipswap stopped)",
		Long:  stateLong,
		Example: `  vipswap state check -c vipswap.yaml
  vipswap state export --file vipswap.db > backup.json
  vipswap state import --file new.db --from backup.json
  vipswap state repair -c vipswap.yaml --active blue`,
	}
	type files struct{ cfg, file *string }
	addFiles := func(c *cobra.Command) files {
		return files{
			cfg:  c.Flags().StringP("config", "c", "vipswap.yaml", "configuration file: its state.path is the state file"),
			file: c.Flags().String("file", "", "the state file itself, instead of the configuration's"),
		}
	}
	sub := func(use, short string, run func(cmd *cobra.Command, path string, cfg *config.Config) error) (*cobra.Command, files) {
		c := &cobra.Command{Use: use, Short: short, Args: exactArgs()}
		f := addFiles(c)
		c.RunE = func(c *cobra.Command, args []string) error {
			path, cfg, err := statePath(c.Flags(), *f.cfg, *f.file)
			if err != nil {
				return err
			}
			return run(c, path, cfg)
		}
		return c, f
	}
	check, _ := sub("check", "read the whole state file and report what it holds, or what is damaged",
		func(c *cobra.Command, path string, cfg *config.Config) error {
			if inEtcd(cfg) {
				return etcdCheck(c.Context(), c.OutOrStdout(), cfg)
			}
			return stateCheck(c.OutOrStdout(), path)
		})
	export, _ := sub("export", "print the state and the history as JSON",
		func(c *cobra.Command, path string, cfg *config.Config) error {
			if inEtcd(cfg) {
				return etcdExport(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), cfg)
			}
			d, err := bolt.Export(path)
			if err != nil {
				return err
			}
			return writeJSON(c.OutOrStdout(), d)
		})
	var from, active, standby *string
	var replace *bool
	imp, _ := sub("import", "create a new state file from the JSON of vipswap state export",
		func(c *cobra.Command, path string, cfg *config.Config) error {
			if inEtcd(cfg) {
				return etcdImport(c.Context(), c.OutOrStdout(), cfg, *from, *replace)
			}
			if *replace {
				return &usageError{msg: "--replace is for state.etcd: a state file is imported into a new file"}
			}
			return stateImport(c.OutOrStdout(), path, *from)
		})
	from = imp.Flags().String("from", "-", "the JSON of vipswap state export ('-': standard input)")
	replace = imp.Flags().Bool("replace", false, "with state.etcd: overwrite the state and history under the prefix")
	repair, _ := sub("repair", "salvage what is readable into a new file in its place",
		func(c *cobra.Command, path string, cfg *config.Config) error {
			if inEtcd(cfg) {
				return errors.New("repair works on a state file; with state.etcd, run vipswap state check, then export, fix the JSON and import --replace")
			}
			return stateRepair(c.OutOrStdout(), path, cfg, *active, *standby)
		})
	active = repair.Flags().String("active", "", "when the state is unreadable: the slot prod follows")
	standby = repair.Flags().String("standby", "", "when the state is unreadable: the slot stage follows (default: the first other slot of the configuration)")
	cmd.AddCommand(check, export, imp, repair)
	return cmd
}

// statePath returns the state file the command works on, and the
// configuration when one was read.
func statePath(fs *pflag.FlagSet, cfgPath, file string) (string, *config.Config, error) {
	explicitC := fs.Changed("config")
	if file != "" {
		if explicitC {
			return "", nil, &usageError{msg: "--config (-c) and --file do not go together"}
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
	d, err := readDump(from, false)
	if err != nil {
		return err
	}
	if err := bolt.Import(path, d); err != nil {
		return err
	}
	fmt.Fprintf(w, "imported into %s: revision %d, active %s, %d history entries\n", path, d.Revision, printable(d.State.Active), len(d.History))
	return nil
}

// readDump reads the JSON of vipswap state export from from ('-':
// standard input); with localCopy, a node's local copy of the state too.
func readDump(from string, localCopy bool) (store.Dump, error) {
	var in io.Reader = os.Stdin
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return store.Dump{}, err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(io.LimitReader(in, 1<<30))
	if err != nil {
		return store.Dump{}, fmt.Errorf("read %s: %w", from, err)
	}
	decode := func(v any) error {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return err
		}
		if dec.More() {
			return errors.New("more than one JSON value")
		}
		return nil
	}
	var d store.Dump
	err = decode(&d)
	if err != nil && localCopy {
		var c struct {
			Store    string         `json:"store"`
			Revision store.Revision `json:"revision"`
			State    *state.State   `json:"state"`
			Saved    time.Time      `json:"saved"`
		}
		if decode(&c) == nil && c.State != nil {
			return store.Dump{Format: store.DumpFormat, Revision: max(c.Revision, 1), State: c.State, History: []store.Entry{}}, nil
		}
	}
	if err != nil {
		what := "the JSON of vipswap state export"
		if localCopy {
			what += " or a node's local copy"
		}
		return d, fmt.Errorf("import %s: not %s: %w", from, what, err)
	}
	return d, nil
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

// inEtcd reports whether the configuration keeps the state in etcd.
func inEtcd(cfg *config.Config) bool { return cfg != nil && cfg.State.Etcd != nil }

func etcdCheck(ctx context.Context, w io.Writer, cfg *config.Config) error {
	s, err := node.OpenEtcd(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.Check(ctx)
	if err != nil {
		return err
	}
	verdict := "sound"
	if len(r.Problems) > 0 {
		verdict = "DAMAGED"
	}
	fmt.Fprintf(w, "%s: %s\n", r.Store, verdict)
	if st := r.State; st != nil {
		fmt.Fprintf(w, "  state: revision %d, active %s, standby %s\n", r.Revision, printable(st.Active), printable(st.Standby))
	} else if len(r.Problems) == 0 {
		fmt.Fprintln(w, "  state: none yet (the first node seeds it from its configuration's active slot)")
	}
	if r.Entries > 0 {
		fmt.Fprintf(w, "  history: %d readable entries, ids %d to %d; counter at %d\n", r.Entries, r.FirstID, r.LastID, r.Seq)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  problem: %s\n", printable(p))
	}
	if len(r.Problems) > 0 {
		return errors.New("the etcd prefix is damaged: export what is readable (vipswap state export), fix it, and import it with vipswap state import --replace; a node's local copy holds the last state it served")
	}
	return nil
}

func etcdExport(ctx context.Context, w, warn io.Writer, cfg *config.Config) error {
	s, err := node.OpenEtcd(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.Check(ctx)
	if err != nil {
		return err
	}
	for _, p := range r.Problems {
		fmt.Fprintf(warn, "left out: %s\n", printable(p))
	}
	return writeJSON(w, r.Dump)
}

func etcdImport(ctx context.Context, w io.Writer, cfg *config.Config, from string, replace bool) error {
	d, err := readDump(from, true)
	if err != nil {
		return err
	}
	s, err := node.OpenEtcd(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	rev, err := s.Import(ctx, d, replace, "vipswap state import --from "+from)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "imported into %s: revision %d, active %s, %d history entries and the import's\n", s.Describe(), rev, printable(d.State.Active), len(d.History))
	return nil
}
