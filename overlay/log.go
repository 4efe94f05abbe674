package overlay

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newMemberlistLogger routes memberlist's "[LEVEL] memberlist: ..." lines to
// slog at the matching level.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

var levelTags = []struct {
	tag   []byte
	level slog.Level
}{
	{[]byte("[DEBUG] "), slog.LevelDebug},
	{[]byte("[INFO] "), slog.LevelInfo},
	{[]byte("[WARN] "), slog.LevelWarn},
	// memberlist says ERR of routine events in an open group, such as
	// failing to gossip to a peer that just died: warnings here.
	{[]byte("[ERR] "), slog.LevelWarn},
	{[]byte("[ERROR] "), slog.LevelWarn},
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimRight(p, "\n")
	level := slog.LevelInfo
	for _, t := range levelTags {
		if bytes.HasPrefix(msg, t.tag) {
			level, msg = t.level, msg[len(t.tag):]
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	if bytes.Contains(msg, []byte("no installed keys could decrypt")) || bytes.Contains(msg, []byte("encryption is configured but remote state is not encrypted")) {
		// A closed group refusing a peer (or a packet) sealed with no
		// key it holds: say so beside memberlist's words.
		w.l.Log(context.Background(), level, string(msg), "component", "memberlist",
			"why", "a peer without this group's cluster key was refused")
		return len(p), nil
	}
	w.l.Log(context.Background(), level, string(msg), "component", "memberlist")
	return len(p), nil
}
