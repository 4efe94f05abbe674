//go:build linux || darwin || freebsd

package node

import (
	"os"
	"syscall"

	"github.com/peer-overlay/peer/swarm"
)

// Elsewhere swarm.DiskFree stays unset: a full disk is still reported,
// only without the figure of what is free.
func init() { swarm.DiskFree = diskFree }

// diskFree is what the file system holding path has free for this
// process: the blocks free to anyone (statfs f_bavail), and for root also
// those the file system keeps back for root (f_bfree).
func diskFree(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	free := uint64(st.Bavail)
	if os.Geteuid() == 0 {
		free = uint64(st.Bfree)
	}
	return int64(free) * int64(st.Bsize), nil
}
