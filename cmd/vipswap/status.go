package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/vipswap/vipswap/api"
)

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	admin := adminFlag(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON (shape in docs/api.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := newClient(*admin).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, s)
	}
	printStatus(stdout, s)
	return nil
}

func printStatus(w io.Writer, s api.Status) {
	fmt.Fprintf(w, "revision %d: active %s, standby %s\n", s.Revision, s.Active, s.Standby)
	for _, l := range s.Listeners {
		fmt.Fprintf(w, "  %-5s %s -> %s (%s failed)\n", l.Name, l.Addr, l.Slot, thousands(l.Failed))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tROLE\tINSTANCE\tHEALTH\tIN-FLIGHT\tSERVED")
	for _, slot := range s.Slots {
		for i, inst := range slot.Instances {
			name, role := slot.Name, slot.Role
			if i > 0 {
				name, role = "", ""
			}
			h := "down"
			if inst.Healthy {
				h = "up"
			}
			if inst.Drained {
				h += ", drained"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", name, role, inst.Addr, h, inst.InFlight.Total(), inst.Served.Total())
		}
	}
	tw.Flush()
}
