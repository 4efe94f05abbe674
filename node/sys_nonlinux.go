//go:build !linux

package node

// totalRAM is not known off Linux: 0, and memoryBudget takes its default.
func totalRAM() int64 { return 0 }
