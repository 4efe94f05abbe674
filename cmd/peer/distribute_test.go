package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/peer-overlay/peer/node"
)

var cursorUp = regexp.MustCompile(`\x1b\[\d+A`)

// The live table is redrawn over itself: the second draw moves the cursor
// up over the lines of the first and erases each before writing it.
func TestRedraw(t *testing.T) {
	var b bytes.Buffer
	n := redraw(&b, 0, []string{"a", "b"})
	if n != 2 || cursorUp.MatchString(b.String()) || !strings.Contains(b.String(), "a\n") {
		t.Fatalf("first draw: %d lines, %q", n, b.String())
	}
	b.Reset()
	n = redraw(&b, 2, []string{"c"})
	if n != 2 || !strings.HasPrefix(b.String(), "\x1b[2A") || strings.Count(b.String(), "\x1b[2K") != 2 || !strings.Contains(b.String(), "c\n") {
		t.Fatalf("second draw: %d lines, %q", n, b.String())
	}
}

func TestTargetLinesAndReport(t *testing.T) {
	job := node.DistributeJob{Name: "data.bin", Size: 8 << 20, Done: true, Seconds: 4,
		Targets: []node.DistributeTarget{
			{Peer: "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF", State: node.TargetDone, Percent: 100, Seconds: 3.5},
			{Peer: "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", As: "db-1", State: node.TargetRefused, Reason: "not an operator"},
			{Peer: "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", State: node.TargetFetching, Percent: 42.5, Rate: 2 << 20, ETASeconds: 3},
		},
		Report: node.DistributeReport{Targets: 3, Done: 1, OriginSent: 9 << 20, EgressRatio: 1.125,
			Failures: []node.DistributeFailure{{Peer: "12D3KooWAAAA", State: node.TargetRefused, Reason: "not an operator"}}},
	}
	lines := targetLines(job)
	if len(lines) != 3 || !strings.Contains(lines[0], "100.0%") || !strings.Contains(lines[0], "done in 3.5 s") ||
		!strings.Contains(lines[1], "db-1") || !strings.Contains(lines[1], "refused: not an operator") ||
		!strings.Contains(lines[2], "42.5%") || !strings.Contains(lines[2], "3s") || !strings.Contains(lines[2], "fetching") {
		t.Fatalf("lines:\n%s", strings.Join(lines, "\n"))
	}
	var b bytes.Buffer
	printReport(&b, job)
	for _, want := range []string{"to 1 of 3 targets", "1.12× the file", "failures:", "refused: not an operator"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// --list shows each job on one line, with how many targets hold a copy and
// whether the job is running, done, or ended short.
func TestJobLines(t *testing.T) {
	jobs := []node.DistributeJob{
		{ID: "1-aa", Name: "build.tar", Size: 64 << 20, Done: true, Seconds: 12.5, Report: node.DistributeReport{Targets: 3, Done: 3, OK: true}},
		{ID: "2-bb", Name: "data.bin", Size: 8 << 20, Done: true, Seconds: 40, Report: node.DistributeReport{Targets: 4, Done: 3}},
		{ID: "3-cc", Name: "image.iso", Size: 1 << 30, Seconds: 3, Report: node.DistributeReport{Targets: 2}},
	}
	lines := jobLines(jobs)
	if len(lines) != 3 {
		t.Fatalf("%d lines for 3 jobs", len(lines))
	}
	for i, want := range [][]string{{"1-aa", "build.tar", "3/3 targets", "done"}, {"2-bb", "3/4 targets", "ended, 1 without a copy"}, {"3-cc", "0/2 targets", "running"}} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
}
