package meta

import "testing"

func TestAutoPieceLength(t *testing.T) {
	for _, c := range []struct{ total, want int64 }{
		{1, 32 << 10},
		{1 << 20, 32 << 10},
		{4 << 20, 64 << 10},
		{8 << 20, 128 << 10},
		{16<<20 - 1, 128 << 10},
		{16 << 20, 128 << 10},
		{20 << 20, 128 << 10},
		{32<<20 - 1, 128 << 10},
		{32 << 20, 128 << 10},
		{64<<20 - 1, 128 << 10},
		{64 << 20, 256 << 10},
		{1 << 40, 256 << 10},
	} {
		if got := AutoPieceLength(c.total); got != c.want {
			t.Errorf("AutoPieceLength(%d) = %d, want %d", c.total, got, c.want)
		}
		if err := checkPieceLength(AutoPieceLength(c.total)); err != nil {
			t.Errorf("AutoPieceLength(%d) gives a bad length: %v", c.total, err)
		}
	}
}
