package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/mail"
	"github.com/peer-overlay/peer/names"
)

// SendRequest sends a message to a peer, by peer ID or name.
type SendRequest struct {
	To       string `json:"to"`
	Text     string `json:"text,omitempty"`
	FileName string `json:"file_name,omitempty"`
	Data     []byte `json:"data,omitempty"`
	TTL      string `json:"ttl,omitempty"` // a Go duration; default 7 days
}

// Inbox is a page of the inbox.
type Inbox struct {
	Messages []mail.Entry `json:"messages"`
}

func registerMail(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /v1/mail/send", func(w http.ResponseWriter, r *http.Request) {
		var req SendRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		var ttl time.Duration
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("ttl %q: want a positive duration", req.TTL)})
				return
			}
			ttl = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		to, err := n.peerOrName(ctx, req.To)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{err.Error()})
			return
		}
		res, err := n.mail.send(ctx, to, mail.Message{Text: req.Text, FileName: req.FileName, Data: req.Data}, ttl)
		if err != nil {
			status := http.StatusBadGateway
			var ref *mail.Refused
			switch {
			case errors.Is(err, mail.ErrTooLarge):
				status = http.StatusRequestEntityTooLarge
			case errors.As(err, &ref):
				status = http.StatusForbidden
			case errors.Is(err, errBadSend):
				status = http.StatusBadRequest
			}
			writeJSON(w, status, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/mail/inbox", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var after uint64
		if s := q.Get("after"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("after %q: want a message number", s)})
				return
			}
			after = v
		}
		var wait time.Duration
		if s := q.Get("wait"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 || d > time.Minute {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("wait %q: want a duration of at most 1m", s)})
				return
			}
			wait = d
		}
		es, err := n.mail.inbox(r.Context(), after, wait)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
			return
		}
		if es == nil {
			es = []mail.Entry{}
		}
		writeJSON(w, http.StatusOK, Inbox{Messages: es})
	})
}

// peerOrName reads a peer ID, or resolves a name to its owner.
func (n *Node) peerOrName(ctx context.Context, s string) (peer.ID, error) {
	if id, err := peer.Decode(s); err == nil {
		return id, nil
	}
	if err := names.Validate(s); err != nil {
		return "", fmt.Errorf("%q is neither a peer ID nor a name: %w", s, names.ErrBadName)
	}
	e, err := n.names.Resolve(ctx, s)
	if err != nil {
		return "", err
	}
	return e.Owner, nil
}

// Send sends a message.
func (c *Client) Send(ctx context.Context, req SendRequest) (SendResult, error) {
	var v SendResult
	return v, c.Post(ctx, "/v1/mail/send", req, &v)
}

// Inbox returns the inbox entries after after, waiting up to wait for
// one to come.
func (c *Client) Inbox(ctx context.Context, after uint64, wait time.Duration) (Inbox, error) {
	var v Inbox
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return v, c.Get(ctx, "/v1/mail/inbox?"+q.Encode(), &v)
}
