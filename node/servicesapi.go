package node

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/peer-overlay/peer/tunnel"
)

// ExposeRequest exposes a backend under a name.
type ExposeRequest struct {
	Name          string   `json:"name"`
	Addr          string   `json:"addr"`
	Allow         []string `json:"allow,omitempty"` // peer IDs or names
	Class         string   `json:"class,omitempty"`
	ProxyProtocol bool     `json:"proxy_protocol,omitempty"`
}

// ForwardRequest forwards a local port to a named service.
type ForwardRequest struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
	Class  string `json:"class,omitempty"`
}

// ServiceName names a service to stop exposing or forwarding.
type ServiceName struct {
	Name string `json:"name"`
}

// ServiceDone answers a change of services.
type ServiceDone struct {
	Name   string `json:"name"`
	Listen string `json:"listen,omitempty"` // a forward's local address, the port chosen when 0
	Done   bool   `json:"done"`             // false: there was nothing to stop
}

func registerServices(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /v1/expose", func(w http.ResponseWriter, r *http.Request) {
		var req ExposeRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		allow, err := n.allowList(ctx, req.Allow)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{err.Error()})
			return
		}
		e := tunnel.Expose{Name: req.Name, Addr: req.Addr, Allow: allow, Class: req.Class, ProxyProtocol: req.ProxyProtocol}
		if err := n.svc.expose(e, true); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("expose %q: %v", req.Name, err)}) // a bad name or address
			return
		}
		writeJSON(w, http.StatusOK, ServiceDone{Name: req.Name, Done: true})
	})
	mux.HandleFunc("POST /v1/unexpose", func(w http.ResponseWriter, r *http.Request) {
		var req ServiceName
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		ok, err := n.svc.unexpose(req.Name)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, ServiceDone{Name: req.Name, Done: ok})
	})
	mux.HandleFunc("POST /v1/forward", func(w http.ResponseWriter, r *http.Request) {
		var req ForwardRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		fw, err := n.svc.forward(tunnel.Forward{Name: req.Name, Listen: req.Listen, Class: req.Class}, true)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("forward %q: %v", req.Name, err)}) // a bad name, or the port is taken
			return
		}
		writeJSON(w, http.StatusOK, ServiceDone{Name: req.Name, Listen: fw.Listen, Done: true})
	})
	mux.HandleFunc("POST /v1/unforward", func(w http.ResponseWriter, r *http.Request) {
		var req ServiceName
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		ok, err := n.svc.unforward(req.Name)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, ServiceDone{Name: req.Name, Done: ok})
	})
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.svc.list())
	})
}

// Expose exposes a backend under a name.
func (c *Client) Expose(ctx context.Context, req ExposeRequest) (ServiceDone, error) {
	var v ServiceDone
	return v, c.Post(ctx, "/v1/expose", req, &v)
}

// Unexpose stops exposing a name.
func (c *Client) Unexpose(ctx context.Context, name string) (ServiceDone, error) {
	var v ServiceDone
	return v, c.Post(ctx, "/v1/unexpose", ServiceName{Name: name}, &v)
}

// Forward forwards a local port to a named service.
func (c *Client) Forward(ctx context.Context, req ForwardRequest) (ServiceDone, error) {
	var v ServiceDone
	return v, c.Post(ctx, "/v1/forward", req, &v)
}

// Unforward stops forwarding a name.
func (c *Client) Unforward(ctx context.Context, name string) (ServiceDone, error) {
	var v ServiceDone
	return v, c.Post(ctx, "/v1/unforward", ServiceName{Name: name}, &v)
}

// Services lists the exposes and forwards with their counts.
func (c *Client) Services(ctx context.Context) (ServicesInfo, error) {
	var v ServicesInfo
	return v, c.Get(ctx, "/v1/services", &v)
}
