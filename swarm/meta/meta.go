// Package meta builds, encodes, decodes and validates BitTorrent v1
// manifests (info dictionaries, .torrent files and magnet links) for the
// file swarm.
//
// Everything a peer decodes from the network goes through Validate, and
// DecodeInfo accepts only canonical encodings, so that the infohash a peer
// computes over the bytes it received is the infohash of the Info it uses.
package meta

import (
	"bytes"
	"crypto/sha1"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/anacrolix/torrent/bencode"
)

const (
	// DefaultPieceLength is the piece length Build uses when given 0.
	DefaultPieceLength = 256 << 10
	// MaxPieces is the largest number of pieces a manifest may have.
	MaxPieces = 1 << 20
	// MaxInfoSize is the largest encoded info dictionary accepted.
	MaxInfoSize = 16 << 20

	minPieceLength = 16 << 10
	maxPieceLength = 16 << 20
	maxTotalLength = 1 << 50
	// maxTorrentSize bounds a whole .torrent file: the info dict plus room
	// for the few other top-level keys.
	maxTorrentSize = MaxInfoSize + 64<<10
)

// InfoHash is the SHA-1 of a bencoded info dictionary.
type InfoHash [20]byte

// String returns the infohash as 40 lowercase hex digits.
func (h InfoHash) String() string { return hex.EncodeToString(h[:]) }

// ParseInfoHash parses 40 hex digits (any case) or 32 base32 characters
// (any case, as found in old magnet links).
func ParseInfoHash(s string) (InfoHash, error) {
	var h InfoHash
	switch len(s) {
	case 40:
		if _, err := hex.Decode(h[:], []byte(s)); err != nil {
			return InfoHash{}, fmt.Errorf("meta: infohash %q is not valid hex: %w", s, err)
		}
		return h, nil
	case 32:
		n, err := base32.StdEncoding.Decode(h[:], []byte(strings.ToUpper(s)))
		if err != nil {
			return InfoHash{}, fmt.Errorf("meta: infohash %q is not valid base32: %w", s, err)
		}
		if n != len(h) {
			return InfoHash{}, fmt.Errorf("meta: infohash %q decodes to %d bytes, want 20", s, n)
		}
		return h, nil
	default:
		return InfoHash{}, fmt.Errorf("meta: infohash %q has %d characters; want 40 hex digits or 32 base32 characters", truncate(s, 64), len(s))
	}
}

// File is one entry of a multi-file info dictionary.
type File struct {
	Length int64    `bencode:"length"`
	Path   []string `bencode:"path"`
}

// Info is the BitTorrent v1 info dictionary.
type Info struct {
	Name        string `bencode:"name"`
	PieceLength int64  `bencode:"piece length"`
	Pieces      string `bencode:"pieces"` // concatenated 20-byte SHA-1s
	Length      int64  `bencode:"length,omitempty"`
	Files       []File `bencode:"files,omitempty"`
}

// Span is the place of one file in the concatenated byte stream of a
// torrent.
type Span struct {
	Path   []string
	Offset int64
	Length int64
}

// Encode returns the bencoding of the info dictionary. It does not
// validate; use Validate for that.
func (i *Info) Encode() ([]byte, error) {
	b, err := bencode.Marshal(i)
	if err != nil {
		return nil, fmt.Errorf("meta: encoding info dictionary: %w", err)
	}
	return b, nil
}

// Hash returns the SHA-1 of Encode(), or the zero InfoHash if encoding
// fails.
func (i *Info) Hash() InfoHash {
	b, err := i.Encode()
	if err != nil {
		return InfoHash{}
	}
	return sha1.Sum(b)
}

// TotalLength is the length of the concatenated content. For an Info that
// has not been validated the result may be meaningless but never panics.
func (i *Info) TotalLength() int64 {
	if len(i.Files) == 0 {
		return i.Length
	}
	var n int64
	for _, f := range i.Files {
		n += f.Length
	}
	return n
}

// NumPieces is the number of piece hashes in Pieces.
func (i *Info) NumPieces() int { return len(i.Pieces) / sha1.Size }

// PieceSize is the length of piece k: PieceLength for every piece but the
// last, which may be shorter. It returns 0 for k out of range.
func (i *Info) PieceSize(k int) int64 {
	if k < 0 || k >= i.NumPieces() || i.PieceLength <= 0 {
		return 0
	}
	start := int64(k) * i.PieceLength
	rest := i.TotalLength() - start
	if rest <= 0 {
		return 0
	}
	return min(rest, i.PieceLength)
}

// PieceHash is the SHA-1 of piece k, or zero for k out of range.
func (i *Info) PieceHash(k int) [20]byte {
	var h [20]byte
	if k < 0 || k >= i.NumPieces() {
		return h
	}
	copy(h[:], i.Pieces[k*sha1.Size:])
	return h
}

// Spans lists the files in order with their offset in the concatenated
// stream. A single-file torrent gives one span with Path = [Name]; a
// directory torrent gives Path = [Name, f.Path...] for each file.
func (i *Info) Spans() []Span {
	if len(i.Files) == 0 {
		return []Span{{Path: []string{i.Name}, Offset: 0, Length: i.Length}}
	}
	spans := make([]Span, 0, len(i.Files))
	var off int64
	for _, f := range i.Files {
		p := make([]string, 0, 1+len(f.Path))
		p = append(p, i.Name)
		p = append(p, f.Path...)
		spans = append(spans, Span{Path: p, Offset: off, Length: f.Length})
		off += f.Length
	}
	return spans
}

// DecodeInfo decodes a bencoded info dictionary, checks that it is in
// canonical form (re-encoding gives the same bytes, so the infohash of b is
// the infohash of the result) and validates it.
func DecodeInfo(b []byte) (*Info, error) {
	if len(b) > MaxInfoSize {
		return nil, fmt.Errorf("meta: info dictionary is %d bytes, more than the %d-byte limit", len(b), MaxInfoSize)
	}
	info, err := parseInfo(b)
	if err != nil {
		return nil, fmt.Errorf("meta: malformed info dictionary: %w", err)
	}
	if err := info.Validate(); err != nil {
		return nil, err
	}
	re, err := info.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(re, b) {
		return nil, errors.New("meta: info dictionary is not in canonical form (re-encoding it gives different bytes)")
	}
	return info, nil
}

// Torrent is a parsed .torrent file.
type Torrent struct {
	Info      *Info
	InfoBytes []byte   // the raw bencoded info dict as found in the file
	Hash      InfoHash // SHA-1 of InfoBytes
}

type torrentFile struct {
	CreatedBy    string        `bencode:"created by"`
	CreationDate int64         `bencode:"creation date"`
	Info         bencode.Bytes `bencode:"info"`
}

// MarshalTorrent returns the bytes of a .torrent file holding info, with
// "created by" = "peer" and the given creation date (unix seconds). There
// is no announce key: peers are found through the DHT.
func MarshalTorrent(info *Info, creationDate int64) ([]byte, error) {
	if info == nil {
		return nil, errors.New("meta: cannot marshal a torrent without an info dictionary")
	}
	if err := info.Validate(); err != nil {
		return nil, err
	}
	ib, err := info.Encode()
	if err != nil {
		return nil, err
	}
	b, err := bencode.Marshal(torrentFile{CreatedBy: "peer", CreationDate: creationDate, Info: ib})
	if err != nil {
		return nil, fmt.Errorf("meta: encoding torrent: %w", err)
	}
	return b, nil
}

// ParseTorrent decodes a .torrent file. The infohash is computed over the
// info dictionary's bytes exactly as they appear in b.
func ParseTorrent(b []byte) (*Torrent, error) {
	if len(b) > maxTorrentSize {
		return nil, fmt.Errorf("meta: torrent file is %d bytes, more than the %d-byte limit", len(b), maxTorrentSize)
	}
	raw, err := torrentInfo(b)
	if err != nil {
		return nil, fmt.Errorf("meta: malformed torrent file: %w", err)
	}
	if raw == nil {
		return nil, errors.New("meta: torrent file has no info dictionary")
	}
	info, err := DecodeInfo(raw)
	if err != nil {
		return nil, err
	}
	return &Torrent{Info: info, InfoBytes: bytes.Clone(raw), Hash: sha1.Sum(raw)}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
