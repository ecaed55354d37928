package node

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// releaseBinaryPages gives the system back the pages of vipswap's own
// binary that its start touched, and has the kernel read back only those
// it uses from then on, one page at a time.
//
// Starting runs every package's initialisation, spread over the whole
// binary (about 40 MB: the drivers, the cluster client and ACME are in
// it), and the kernel maps 64 KiB around each page touched: about 20 MiB
// of the binary were resident before the first request, most never used
// again. MADV_RANDOM stops the read-ahead around a page read back, and
// MADV_PAGEOUT reclaims the pages this process alone maps (those another
// process maps, a vipswap of the same binary, stay). Both keep what the
// pages hold: the binary's pages are read from its file again when used.
// The cost is once: the first requests after start read the pages of the
// request path back (a few milliseconds in all).
//
// Only the binary's read-only mappings are touched (its code and constant
// data), found by the file's device and inode, so a binary replaced on
// disk since it started is still recognised.
func releaseBinaryPages() error {
	var exe syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &exe); err != nil {
		return err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	var ranges [][2]uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset major:minor inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.ContainsRune(fields[1], 'w') || fields[4] != strconv.FormatUint(exe.Ino, 10) {
			continue
		}
		major, minor, ok := strings.Cut(fields[3], ":")
		maj, err1 := strconv.ParseUint(major, 16, 32)
		mnr, err2 := strconv.ParseUint(minor, 16, 32)
		if !ok || err1 != nil || err2 != nil || unix.Mkdev(uint32(maj), uint32(mnr)) != exe.Dev {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return fmt.Errorf("/proc/self/maps: unreadable line %q", sc.Text())
		}
		ranges = append(ranges, [2]uintptr{uintptr(start), uintptr(end)})
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, r := range ranges {
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r[0], r[1]-r[0], uintptr(advice)); errno != 0 {
				return fmt.Errorf("madvise %#x-%#x: %w", r[0], r[1], errno)
			}
		}
	}
	return nil
}
