package chord

import "fmt"

// Peer is a member of the ring: its identifier and its name. The name is
// opaque to the core (the binding uses the libp2p peer ID string); the
// binding guarantees that ID is SHA-1 of the peer ID's bytes.
type Peer struct {
	ID   ID
	Name string
}

// IsZero reports whether p is the empty peer (no predecessor known, say).
func (p Peer) IsZero() bool { return p.Name == "" }

func (p Peer) String() string {
	if p.IsZero() {
		return "<none>"
	}
	return p.ID.Short() + "/" + p.Name
}

// MsgType says what a message asks or answers.
type MsgType uint8

// Requests (Ping, GetState, Find) get exactly one reply (Pong, State,
// Found) carrying the request's Seq. Notify and Leaving are one-way.
const (
	MsgPing     MsgType = 1 // are you alive?
	MsgPong     MsgType = 2 // yes
	MsgGetState MsgType = 3 // your predecessor and successor list
	MsgState    MsgType = 4 // Pred, Nodes = successor list
	MsgFind     MsgType = 5 // route towards Target
	MsgFound    MsgType = 6 // Done: Nodes = owner and its successors; else Nodes = closer candidates
	MsgNotify   MsgType = 7 // From believes it is To's predecessor (rectify)
	MsgLeaving  MsgType = 8 // From leaves the ring: Pred = its predecessor, Nodes = its successor list
)

// maxMsgType is the highest known message type.
const maxMsgType = MsgLeaving

func (t MsgType) String() string {
	switch t {
	case MsgPing:
		return "ping"
	case MsgPong:
		return "pong"
	case MsgGetState:
		return "get-state"
	case MsgState:
		return "state"
	case MsgFind:
		return "find"
	case MsgFound:
		return "found"
	case MsgNotify:
		return "notify"
	case MsgLeaving:
		return "leaving"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// IsRequest reports whether a message of type t expects a reply.
func (t MsgType) IsRequest() bool { return t == MsgPing || t == MsgGetState || t == MsgFind }

// IsReply reports whether t answers a request.
func (t MsgType) IsReply() bool { return t == MsgPong || t == MsgState || t == MsgFound }

// Message is one Chord RPC or reply. Fields not used by a type are zero.
type Message struct {
	Type   MsgType
	From   Peer
	To     Peer
	Seq    uint64 // request number, echoed by the reply
	Target ID     // Find
	Pred   Peer   // State, Leaving
	Nodes  []Peer // State, Found, Leaving
	Done   bool   // Found
}

func (m Message) String() string {
	return fmt.Sprintf("%s #%d %s→%s", m.Type, m.Seq, m.From.ID.Short(), m.To.ID.Short())
}
