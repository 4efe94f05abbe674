// Package names gives peers DNS-style names on the ring: a name is an
// owned record at SHA-1("name:"+NAME), signed by the peer that claimed it
// first, resolving to that peer's ID and the services it offers.
//
// The rules of ownership (first claim wins, only the owner updates or
// releases, a lease that the owner renews) are the record layer's; this
// package checks names, encodes what a name holds, and resolves names
// through a cache that answers at once and refreshes in the background.
package names

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Limits of a name, as DNS has them (RFC 1035): labels of at most 63
// characters, at most 253 in all.
const (
	MaxLabel = 63
	MaxName  = 253
	// MaxServices bounds the services one name lists.
	MaxServices = 64
)

// ErrBadName: the name is not a DNS-style name.
var ErrBadName = errors.New("bad name")

// Validate says why name is not a name, or nil: one or more dot-separated
// labels of lowercase letters, digits and hyphens, each 1 to 63 characters
// and neither starting nor ending with a hyphen; 253 characters at most.
func Validate(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrBadName)
	}
	if len(name) > MaxName {
		return fmt.Errorf("%w: %d characters, at most %d", ErrBadName, len(name), MaxName)
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return fmt.Errorf("%w %q: an empty label (two dots, or a dot at an end)", ErrBadName, name)
		case len(label) > MaxLabel:
			return fmt.Errorf("%w %q: label %q has %d characters, at most %d", ErrBadName, name, label, len(label), MaxLabel)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%w %q: label %q starts or ends with a hyphen", ErrBadName, name, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w %q: %q is not allowed (lowercase letters, digits, hyphens and dots only)", ErrBadName, name, c)
			}
		}
	}
	return nil
}

// Key is the ring key of name's record.
func Key(name string) []byte { return []byte("name:" + name) }

// Entry is what a name's record holds besides its owner (the record's
// signer): the services the owner offers under the name.
type Entry struct {
	Services []string `json:"services,omitempty"`
}

// Encode is the record value of e.
func (e Entry) Encode() []byte {
	b, _ := json.Marshal(e) // a struct of strings always encodes
	return b
}

// Decode reads a record value, refusing anything but an Entry within the
// limits; an empty value is an Entry with no services.
func Decode(b []byte) (Entry, error) {
	var e Entry
	if len(b) == 0 {
		return e, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("name record: %w", err)
	}
	if dec.More() {
		return Entry{}, errors.New("name record: trailing data")
	}
	if len(e.Services) > MaxServices {
		return Entry{}, fmt.Errorf("name record: %d services, at most %d", len(e.Services), MaxServices)
	}
	for _, s := range e.Services {
		if err := Validate(s); err != nil {
			return Entry{}, fmt.Errorf("name record: service: %w", err)
		}
	}
	if !slices.IsSorted(e.Services) || len(slices.Compact(slices.Clone(e.Services))) != len(e.Services) {
		return Entry{}, errors.New("name record: services not sorted and distinct")
	}
	return e, nil
}
