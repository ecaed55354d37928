package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"time"
)

// A configuration file is read as one complete version of it: an editor or
// a shell redirection that rewrites the file in place (truncate, then
// write) leaves it short for a moment, and a prefix cut at a line end often
// parses (a slot's list of instances without its last entries). So the file
// is read twice, Settle apart, and used only when both reads agree: same
// file, same size, same modification time, same bytes. The modification
// time's age is not trusted to skip the wait: file timestamps come from a
// coarse clock that can lag the real time by a good part of a second (a
// file truncated just now can look untouched for 400 ms). Writing the file
// elsewhere and renaming it into place is the way to change it that never
// shows a partial version.
const (
	// Settle is the time between the two reads of the file, which must
	// agree: a writer that pauses less than this between two pieces of
	// the file is seen.
	Settle = 200 * time.Millisecond
	// snapshotTries bounds the attempts at a version that stays still.
	snapshotTries = 5
)

// snapshot reads a file as one complete version.
type snapshot struct {
	settle  time.Duration       // between the two reads of an attempt
	tries   int                 // attempts before giving up
	sleep   func(time.Duration) // time.Sleep, but for tests
	between func()              // if set, runs between an attempt's two reads (tests)
}

var stable = snapshot{settle: Settle, tries: snapshotTries, sleep: time.Sleep}

// ReadSnapshot returns the contents of the file at path as one complete
// version: it reads the file twice, Settle apart, and returns the contents
// when both reads agree. A file that changes at each of a few attempts
// (about a second) is refused: it is being written.
func ReadSnapshot(path string) ([]byte, error) { return stable.read(path) }

func (s snapshot) read(path string) ([]byte, error) {
	if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() {
		data, err := os.ReadFile(path) // a pipe or a device: read as it comes
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		return data, nil
	}
	start := time.Now()
	for range s.tries {
		data, info, err := readOnce(path)
		if err != nil {
			return nil, err
		}
		s.sleep(s.settle) // a writer between two pieces of the file is not done
		if s.between != nil {
			s.between()
		}
		again, info2, err := readOnce(path)
		if err != nil {
			return nil, err
		}
		if data != nil && again != nil && os.SameFile(info, info2) && info.Size() == info2.Size() &&
			info.ModTime().Equal(info2.ModTime()) && bytes.Equal(data, again) {
			return data, nil
		}
	}
	return nil, fmt.Errorf("read config %s: the file changed while it was read (%d attempts in %s); try again: to change it, write the new version to another file and rename it into place (mv)",
		path, s.tries, time.Since(start).Round(time.Millisecond))
}

// readOnce reads path and returns its contents and what fstat said of it
// after the read. data is nil when the file changed during the read: its
// size or modification time moved, or the bytes read are not its size.
func readOnce(path string) (data []byte, info os.FileInfo, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	data, err = io.ReadAll(f)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	after, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	if before.Size() != after.Size() || !before.ModTime().Equal(after.ModTime()) || int64(len(data)) != after.Size() {
		return nil, after, nil
	}
	if data == nil {
		data = []byte{}
	}
	return data, after, nil
}
