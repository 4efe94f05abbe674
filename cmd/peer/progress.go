package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how far a long job has come: a bar on a terminal, plain
// lines (one per change) otherwise, so logs and pipes stay readable.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	label string
	total int
	last  int
}

func newProgress(label string, total int) *progress {
	p := &progress{w: os.Stderr, label: label, total: total, last: -1}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// set reports that n of total are done.
func (p *progress) set(n int) {
	if n == p.last {
		return
	}
	p.last = n
	if p.bar != nil {
		_ = p.bar.Set(n)
		return
	}
	fmt.Fprintf(p.w, "%s: %d/%d\n", p.label, n, p.total)
}

func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
