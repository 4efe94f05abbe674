// Package defaults fills the fields of a Config that were left unset.
package defaults

import "cmp"

// Set sets *p to v when *p is not above the zero value of its type: a
// field left at zero takes its default, and so does a negative number,
// which no setting means. For strings and unsigned numbers that is
// exactly the zero value.
func Set[T cmp.Ordered](p *T, v T) {
	var zero T
	if *p <= zero {
		*p = v
	}
}
