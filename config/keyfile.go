package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// maxKeyFile bounds an affinity key file.
const maxKeyFile = 4 << 10

// LoadAffinityKey reads affinity.key_file: its contents, surrounding white
// space removed, which must be at least 16 bytes.
func LoadAffinityKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("affinity.key_file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("affinity.key_file: %s: %w", path, err)
	}
	if len(raw) > maxKeyFile {
		return nil, fmt.Errorf("affinity.key_file: %s is over %d bytes; a key needs 16 to 64 (openssl rand -base64 32 > %s)", path, maxKeyFile, path)
	}
	key := bytes.TrimSpace(raw)
	if len(key) < 16 {
		return nil, fmt.Errorf("affinity.key_file: %s holds %d bytes, want at least 16 (openssl rand -base64 32 > %s)", path, len(key), path)
	}
	return key, nil
}
