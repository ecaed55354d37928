package main

import (
	"bytes"
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
or --file.`

func newStateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state check|export|import|repair",
		Short: "check, export, import or repair the state file (vipswap stopped)",
		Long:  stateLong,
		Example: `  vipswap state check -c vipswap.yaml
  vipswap state export --file vipswap.db > backup.json
  vipswap state import --file new.db --from backup.json
  vipswap state repair -c vipswap.yaml --active blue`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &usageError{msg: "missing check, export, import or repair (run vipswap help state)"}
			}
			return &usageError{msg: fmt.Sprintf("unknown state command %q (want check, export, import or repair)", args[0])}
		},
		RunE: func(*cobra.Command, []string) error { return nil },
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
		func(c *cobra.Command, path string, _ *config.Config) error { return stateCheck(c.OutOrStdout(), path) })
	export, _ := sub("export", "print the state and the history as JSON",
		func(c *cobra.Command, path string, _ *config.Config) error {
			d, err := bolt.Export(path)
			if err != nil {
				return err
			}
			return writeJSON(c.OutOrStdout(), d)
		})
	var from, active, standby *string
	imp, _ := sub("import", "create a new state file from the JSON of vipswap state export",
		func(c *cobra.Command, path string, _ *config.Config) error {
			return stateImport(c.OutOrStdout(), path, *from)
		})
	from = imp.Flags().String("from", "-", "the JSON of vipswap state export ('-': standard input)")
	repair, _ := sub("repair", "salvage what is readable into a new file in its place",
		func(c *cobra.Command, path string, cfg *config.Config) error {
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
