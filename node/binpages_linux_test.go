package node

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// binaryResidency sums, over this process's read-only mappings of its own
// binary, their size and their resident memory (KiB, from smaps).
func binaryResidency(t *testing.T) (size, rss int) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == exe && !strings.ContainsRune(fields[1], 'w')
			continue
		}
		if !in || len(fields) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "Size:":
			size += kb
		case "Rss:":
			rss += kb
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if size == 0 {
		t.Fatalf("no read-only mapping of %s in /proc/self/smaps", exe)
	}
	return size, rss
}

// TestBinaryPagesAreGivenBack: once started, vipswap gives back the pages
// of its binary that starting touched (this test's binary stands in: its
// initialisation touched its pages as vipswap's does), and goes on working
// with those it reads back.
func TestBinaryPagesAreGivenBack(t *testing.T) {
	size, before := binaryResidency(t)
	err := releaseBinaryPages()
	if errors.Is(err, syscall.EINVAL) {
		t.Skipf("this kernel has no MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	_, after := binaryResidency(t)
	t.Logf("the binary's read-only mappings: %d KiB, %d KiB resident before, %d KiB after", size, before, after)
	if after > before/2 {
		t.Fatalf("%d KiB of the binary resident after the pages were given back, %d before: want at most half", after, before)
	}
	// The code and constant data read back are what they were.
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Fatalf("after the pages were given back: %q", got)
	}
}
