package swarm

import (
	"crypto/sha1"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// WriteSample writes size pseudo-random bytes (seeded) to path and returns
// their SHA-1.
func WriteSample(path string, size int64, seed uint64) ([20]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return [20]byte{}, err
	}
	f, err := os.Create(path)
	if err != nil {
		return [20]byte{}, err
	}
	defer f.Close()
	h := sha1.New()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 'p', 'e', 'e', 'r'}))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		for i := range buf[:n] {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return [20]byte{}, err
		}
		h.Write(buf[:n])
		left -= n
	}
	var sum [20]byte
	copy(sum[:], h.Sum(nil))
	return sum, f.Close()
}

// FileSHA1 hashes the whole file at path.
func FileSHA1(path string) ([20]byte, error) {
	var sum [20]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
