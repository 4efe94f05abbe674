package meta

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Magnet returns "magnet:?xt=urn:btih:<40 hex>&dn=<escaped name>", leaving
// out dn when name is empty.
func Magnet(h InfoHash, name string) string {
	s := "magnet:?xt=urn:btih:" + h.String()
	if name != "" {
		// %20 rather than "+" for spaces: understood by every client.
		s += "&dn=" + strings.ReplaceAll(url.QueryEscape(name), "+", "%20")
	}
	return s
}

// ParseMagnet parses a magnet URI with an xt=urn:btih: parameter in hex or
// base32. The dn parameter, if any, gives name; other parameters and
// non-btih xt parameters are ignored.
func ParseMagnet(s string) (h InfoHash, name string, err error) {
	const scheme = "magnet:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return InfoHash{}, "", fmt.Errorf("meta: %q is not a magnet link", truncate(s, 64))
	}
	rest := s[len(scheme):]
	if !strings.HasPrefix(rest, "?") {
		return InfoHash{}, "", fmt.Errorf("meta: magnet link %q has no query", truncate(s, 64))
	}
	rest = rest[1:]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	found, haveName := false, false
	for _, param := range strings.Split(rest, "&") {
		key, val, _ := strings.Cut(param, "=")
		switch {
		case key == "xt" || strings.HasPrefix(key, "xt."):
			v, err := url.QueryUnescape(val)
			if err != nil {
				return InfoHash{}, "", fmt.Errorf("meta: magnet link xt parameter: %w", err)
			}
			const prefix = "urn:btih:"
			if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
				continue // some other kind of hash
			}
			x, err := ParseInfoHash(v[len(prefix):])
			if err != nil {
				return InfoHash{}, "", err
			}
			if found && x != h {
				return InfoHash{}, "", fmt.Errorf("meta: magnet link has conflicting infohashes %s and %s", h, x)
			}
			h, found = x, true
		case key == "dn" && !haveName:
			v, err := url.QueryUnescape(val)
			if err != nil {
				return InfoHash{}, "", fmt.Errorf("meta: magnet link dn parameter: %w", err)
			}
			name, haveName = v, true
		}
	}
	if !found {
		return InfoHash{}, "", errors.New("meta: magnet link has no xt=urn:btih: parameter")
	}
	return h, name, nil
}
