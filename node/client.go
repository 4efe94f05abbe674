package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
)

// Client talks to the daemon running in a home through its control API.
type Client struct {
	home  string
	ep    endpoint
	httpc *http.Client
}

// NewClient finds the control API of the daemon running in home. It fails
// with ErrNotRunning when none is.
func NewClient(home string) (*Client, error) {
	raw, err := os.ReadFile(filepath.Join(home, controlFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(home); errors.Is(serr, fs.ErrNotExist) {
			return nil, fmt.Errorf("home %s does not exist: %w", home, notRunning(home))
		}
		return nil, notRunning(home)
	}
	if err != nil {
		return nil, fmt.Errorf("home %s: %w", home, err)
	}
	var ep endpoint
	if err := json.Unmarshal(raw, &ep); err != nil || (ep.Network != "unix" && ep.Network != "tcp") {
		return nil, fmt.Errorf("home %s: %s is unreadable; restart the peer to rewrite it", home, controlFile)
	}
	c := &Client{home: home, ep: ep}
	c.httpc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, ep.Network, ep.Address)
		},
	}}
	return c, nil
}

// Get fetches path (such as "/v1/status") into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// ErrNotFoundAPI marks a 404 answer (a key with no value, say).
var ErrNotFoundAPI = errors.New("not found")

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func (c *Client) do(ctx context.Context, method, path string, reqBody io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://peer"+path, reqBody)
	if err != nil {
		return err
	}
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.ep.Token)
	resp, err := c.httpc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
			return notRunning(c.home) // a daemon that was killed left control.json behind
		}
		return fmt.Errorf("control API of %s: %w", c.home, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control API of %s: %w", c.home, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			if resp.StatusCode == http.StatusNotFound {
				return fmt.Errorf("%s: %w", e.Error, ErrNotFoundAPI)
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("control API of %s: %s", c.home, resp.Status)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("control API of %s: bad answer: %w", c.home, err)
	}
	return nil
}

// ID asks for the peer ID and addresses.
func (c *Client) ID(ctx context.Context) (IDInfo, error) {
	var v IDInfo
	return v, c.Get(ctx, "/v1/id", &v)
}

// Status asks for the daemon's status.
func (c *Client) Status(ctx context.Context) (StatusInfo, error) {
	var v StatusInfo
	return v, c.Get(ctx, "/v1/status", &v)
}

// Members asks for the group as the daemon sees it.
func (c *Client) Members(ctx context.Context) (MembersInfo, error) {
	var v MembersInfo
	return v, c.Get(ctx, "/v1/members", &v)
}

// stream GETs path and calls fn with each line of the answer as it
// arrives (an NDJSON answer).
func (c *Client) stream(ctx context.Context, path string, fn func(line []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://peer"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.ep.Token)
	resp, err := c.httpc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
			return notRunning(c.home)
		}
		return fmt.Errorf("control API of %s: %w", c.home, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control API of %s: %s", c.home, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("control API of %s: %w", c.home, err)
	}
	return nil
}

// DashboardURL is the URL of the daemon's dashboard, with the control
// token in it when the HTTP face asks for one; "" when the face is off.
func (c *Client) DashboardURL(ctx context.Context) (string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return "", err
	}
	if st.HTTP == "" || st.HTTPOpen {
		return st.HTTP, nil
	}
	return st.HTTP + "?token=" + c.ep.Token, nil
}
