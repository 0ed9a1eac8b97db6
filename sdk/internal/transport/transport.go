// Package transport is the HTTP-over-Unix-socket client shared by the sdk's API clients.
package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// APIError is an error answer of a service: its status and upstream's message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

// Client sends requests to one service socket.
type Client struct {
	http       *http.Client
	host       string
	apiVersion string
}

// SocketPath accepts a plain path or a unix:// URI as upstream configs write them.
func SocketPath(endpoint string) string {
	if strings.HasPrefix(endpoint, "unix://") {
		if u, err := url.Parse(endpoint); err == nil {
			return u.Path
		}
	}
	return endpoint
}

// Connection habits. The services count connections per UID against max_requests
// (default 10) and drop the ones beyond it unanswered, so a client holds few: a handful
// at once, at most MaxIdle of them idle, and those only briefly.
const (
	DefaultMaxConns = 4
	MaxIdle         = 2
	IdleTimeout     = 2 * time.Second
)

// Retries of a request the service dropped unanswered (its user was at max_requests,
// or the service restarted): a few, with a short growing pause.
const (
	retries      = 6
	retryBackoff = 5 * time.Millisecond
)

// New returns a client for the socket at endpoint. maxConns bounds the connections it
// opens at once (0 means DefaultMaxConns).
func New(endpoint, host, apiVersion string, maxConns int) *Client {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	path := SocketPath(endpoint)
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		MaxConnsPerHost:     maxConns,
		MaxIdleConnsPerHost: min(maxConns, MaxIdle),
		IdleConnTimeout:     IdleTimeout,
	}
	return &Client{http: &http.Client{Transport: tr}, host: host, apiVersion: apiVersion}
}

// unanswered reports whether err means the service closed the connection without an
// answer: the request was not served, and sending it again is safe.
func unanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN)
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Do sends method path with in as JSON (nil for none) and decodes the answer into out
// (nil to ignore it). Error answers come back as *APIError. A request the service
// dropped unanswered is sent again a few times. The services close a connection
// unanswered at their per-user limit, but also when they crash while serving it, so
// only idempotent calls use Do (signing, loading, creation that returns the existing
// key, import, delete); the others use DoOnce.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out, retries)
}

// DoOnce is Do without retries, for a request that must not be sent twice: a move,
// whose repetition after success would fail, or an issuance, which would sign again.
func (c *Client) DoOnce(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out, 0)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any, retries int) error {
	var payload []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		payload = b
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	url := "http://" + c.host + path + sep + "api-version=" + c.apiVersion
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		var body io.Reader
		if payload != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err = c.http.Do(req)
		if err == nil {
			break
		}
		if attempt >= retries || !unanswered(err) || ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		t := time.NewTimer(retryBackoff << attempt)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s %s: %w", method, path, err)
		case <-t.C:
		}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Message}
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// PathEscape escapes an ID for one path segment.
func PathEscape(id string) string { return url.PathEscape(id) }
