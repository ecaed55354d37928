package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
)

// DamagedError is returned when a state file cannot be used as it is. Its
// message is one line naming the file, what is wrong and what to do.
type DamagedError struct {
	// Path is the state file.
	Path string
	// Problem says what is wrong with it.
	Problem string
	// Empty reports a zero-byte file.
	Empty bool
	// Foreign reports a sound bbolt file that is not a vipswap state file.
	Foreign bool
}

func (e *DamagedError) Error() string {
	switch {
	case e.Empty:
		return fmt.Sprintf("state file %s is empty (0 bytes), so which slot is active is unknown: restore it from a backup, "+
			`run "vipswap state repair --file %s --active SLOT --standby SLOT" to set it aside and rebuild it, or remove it to start afresh from the configuration's active slot`, e.Path, e.Path)
	case e.Foreign:
		return fmt.Sprintf("state file %s is not a vipswap state file (%s): point state.path at another file", e.Path, e.Problem)
	}
	return fmt.Sprintf(`state file %s is damaged (%s): run "vipswap state repair --file %s" to salvage what is readable into a new file (the damaged one is kept aside), or restore a backup`, e.Path, e.Problem, e.Path)
}

// The bbolt file format, as far as vipswap checks it before bbolt maps the
// file (go.etcd.io/bbolt internal/common: page.go and meta.go). Each of the
// first two pages holds a meta record after a 16-byte page header; bbolt
// uses the valid one with the higher transaction ID.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // the fields below, checksum last
	noFreelist     = ^uint64(0)
)

// meta is a bbolt meta record.
type meta struct {
	magic, version, pageSize, flags uint32
	root, sequence, freelist        uint64
	pgid, txid, checksum            uint64
}

// parseMeta decodes the meta record of the page starting at b and reports
// whether it is valid: magic, version and checksum.
func parseMeta(b []byte) (meta, bool) {
	if len(b) < pageHeaderSize+metaSize {
		return meta{}, false
	}
	r := b[pageHeaderSize : pageHeaderSize+metaSize]
	e := binary.NativeEndian // bbolt writes its structs in the machine's byte order
	m := meta{
		magic: e.Uint32(r[0:]), version: e.Uint32(r[4:]), pageSize: e.Uint32(r[8:]), flags: e.Uint32(r[12:]),
		root: e.Uint64(r[16:]), sequence: e.Uint64(r[24:]), freelist: e.Uint64(r[32:]),
		pgid: e.Uint64(r[40:]), txid: e.Uint64(r[48:]), checksum: e.Uint64(r[56:]),
	}
	h := fnv.New64a()
	h.Write(r[:56])
	return m, m.magic == boltMagic && m.version == boltVersion && m.checksum == h.Sum64()
}

// header is what inspect learnt from a file's first pages.
type header struct {
	size    int64
	meta    meta  // the meta bbolt would use
	problem error // why bbolt must not map the file; nil if it may
}

// inspect reads the header of the bbolt file at path without mapping it:
// an empty file, no valid meta page, or a file shorter than its meta says
// (bbolt would fault reading past its end: SIGBUS) are problems.
func inspect(path string) (header, error) {
	f, err := os.Open(path)
	if err != nil {
		return header{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return header{}, err
	}
	h := header{size: info.Size()}
	if !info.Mode().IsRegular() {
		h.problem = errors.New("it is not a regular file")
		return h, nil
	}
	if h.size == 0 {
		h.problem = errEmpty
		return h, nil
	}
	page := make([]byte, 4096)
	n, err := f.ReadAt(page, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return h, err
	}
	m0, ok0 := parseMeta(page[:n])
	// The second meta page starts one page in; its size is in the first
	// if that is valid, else try every size bbolt may have used.
	var m1 meta
	ok1 := false
	sizes := []int64{1024, 2048, 4096, 8192, 16384, 32768, 65536}
	if ok0 {
		sizes = []int64{int64(m0.pageSize)}
	}
	for _, ps := range sizes {
		if n, err := f.ReadAt(page, ps); n >= pageHeaderSize+metaSize || err == nil {
			if m1, ok1 = parseMeta(page[:n]); ok1 {
				break
			}
		}
	}
	switch {
	case !ok0 && !ok1:
		h.problem = errors.New("no valid bbolt header: it is not a bbolt file, or its first pages are overwritten")
		return h, nil
	case ok0 && ok1 && m1.txid > m0.txid, !ok0:
		h.meta = m1
	default:
		h.meta = m0
	}
	m := h.meta
	ps := uint64(m.pageSize)
	switch {
	case ps < 512 || ps > 1<<20 || ps&(ps-1) != 0:
		h.problem = fmt.Errorf("its header gives a page size of %d bytes", ps)
	case m.pgid < 4 || m.root < 2 || m.root >= m.pgid || (m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid)):
		h.problem = fmt.Errorf("its header is inconsistent (root page %d, freelist page %d, %d pages)", m.root, m.freelist, m.pgid)
	case m.pgid > uint64(h.size)/ps:
		h.problem = fmt.Errorf("it is truncated: %d bytes where its header says %d pages of %d bytes", h.size, m.pgid, ps)
	}
	return h, nil
}

var errEmpty = errors.New("it is empty (0 bytes)")

// guarded runs f and turns a panic (bbolt's on a page that is not what it
// should be) or a memory fault (reading a mapped page the file does not
// have: SIGBUS) into an error, so that damage is reported, never a crash.
// f must not start goroutines that touch the file.
func guarded(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("unreadable page: %v", p)
		}
	}()
	return f()
}
