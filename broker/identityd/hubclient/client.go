// Package hubclient is identityd's IoT Hub REST client: the device's own identity and the
// module identities under it (cloud-hub.md §1–§5, flows.md §5), with upstream's outbound
// HTTP behaviour (flows.md §2): a timeout per attempt, cloud_retries extra attempts on
// failures, 429 back-off, HTTPS_PROXY, the system trust store, and a fresh SAS token on
// every request. Every wait is a field of Waits so tests can shorten it.
package hubclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotbroker/aziot/sdk/sas"
)

// APIVersion is what upstream sends on every Hub call.
const APIVersion = "2017-11-08-preview"

// maxResponse bounds a response body (a list of modules is the largest answer).
const maxResponse = 4 << 20

// Waits are the client-side waits of flows.md §2. DefaultWaits gives upstream's values;
// identityd sets Timeout and Retries from cloud_timeout_sec and cloud_retries.
type Waits struct {
	// Timeout bounds one attempt, from connecting to reading the whole body (70 s).
	Timeout time.Duration
	// Retries is the number of extra attempts after a connect error, a timeout, a body
	// read error, or a 500/503 answer (cloud_retries, 1), RetryDelay apart (3 s).
	Retries    int
	RetryDelay time.Duration
	// ThrottleBackoff is the wait before each resend after a 429 whose Retry-After is absent
	// or unusable (60, 120, 180, 300 s), plus a random jitter below ThrottleJitter[i]
	// (10, 20, 30, 30 s). Its length is the number of resends after 429s.
	ThrottleBackoff []time.Duration
	ThrottleJitter  []time.Duration
	// RetryAfterUnit is the length of one Retry-After second (1 s; tests shorten it) and
	// RetryAfterMax caps an honoured Retry-After (300 s, upstream's longest back-off).
	RetryAfterUnit time.Duration
	RetryAfterMax  time.Duration
	// TokenLifetime is the lifetime of each SAS token (30 s, as upstream).
	TokenLifetime time.Duration
}

// DefaultWaits returns upstream's values.
func DefaultWaits() Waits {
	return Waits{
		Timeout:         70 * time.Second,
		Retries:         1,
		RetryDelay:      3 * time.Second,
		ThrottleBackoff: []time.Duration{60 * time.Second, 120 * time.Second, 180 * time.Second, 300 * time.Second},
		ThrottleJitter:  []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second},
		RetryAfterUnit:  time.Second,
		RetryAfterMax:   300 * time.Second,
		TokenLifetime:   sas.Lifetime,
	}
}

// Config describes the device the client acts as.
type Config struct {
	// HubName is the IoT Hub host name (assignedHub or iothub_hostname); the SAS audience
	// always uses it (cloud-hub.md §4.1). It may carry ":port".
	HubName string
	// Gateway is the host[:port] requests go to: the parent gateway when nested. Empty
	// means HubName.
	Gateway  string
	DeviceID string
	// Sign computes HMAC-SHA256 with the device key (keyd SignHMAC, or tpmd). Nil means
	// X.509 authentication: the client certificate comes from TLSConfig.
	Sign sas.SignFunc
	// TLSConfig is cloned. Nil RootCAs means the system trust store (which honours
	// SSL_CERT_FILE and SSL_CERT_DIR); Certificates or GetClientCertificate carry the
	// device's identity certificate for X.509.
	TLSConfig *tls.Config
	// Waits; nil means DefaultWaits(). Fields are used as given.
	Waits *Waits
	// APIVersion; empty means APIVersion.
	APIVersion string
	// Now is the token clock; nil means time.Now.
	Now func() time.Time
}

// Client is safe for concurrent use.
type Client struct {
	hub, gateway, device, apiVersion string
	sign                             sas.SignFunc
	waits                            Waits
	now                              func() time.Time
	http                             *http.Client
	tr                               *http.Transport
	// sleep waits d or until ctx ends; tests replace it to record the waits.
	sleep func(ctx context.Context, d time.Duration) error
}

// New builds a client; it does not contact the hub.
func New(cfg Config) (*Client, error) {
	if cfg.HubName == "" || cfg.DeviceID == "" {
		return nil, errors.New("iot hub client: hub name and device ID are required")
	}
	if cfg.Sign == nil && (cfg.TLSConfig == nil || (len(cfg.TLSConfig.Certificates) == 0 && cfg.TLSConfig.GetClientCertificate == nil)) {
		return nil, errors.New("iot hub client: neither a SAS signer nor a TLS client certificate is configured")
	}
	c := &Client{
		hub: cfg.HubName, gateway: cfg.Gateway, device: cfg.DeviceID, apiVersion: cfg.APIVersion,
		sign: cfg.Sign, waits: DefaultWaits(), now: cfg.Now, sleep: sleepCtx,
	}
	if c.gateway == "" {
		c.gateway = c.hub
	}
	if c.apiVersion == "" {
		c.apiVersion = APIVersion
	}
	if cfg.Waits != nil {
		c.waits = *cfg.Waits
	}
	if c.waits.Timeout <= 0 {
		c.waits.Timeout = DefaultWaits().Timeout
	}
	if c.waits.TokenLifetime <= 0 {
		c.waits.TokenLifetime = sas.Lifetime
	}
	if c.now == nil {
		c.now = time.Now
	}
	tc := &tls.Config{}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12 // what IoT Hub requires
	}
	c.tr = &http.Transport{
		Proxy:               http.ProxyFromEnvironment, // HTTPS_PROXY, then https_proxy; userinfo becomes Proxy-Authorization
		TLSClientConfig:     tc,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	c.http = &http.Client{
		Transport: c.tr,
		// The hub never redirects; following one could carry the device token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// GetDevice returns the device's own identity (GET /devices/{d}; upstream never calls it).
func (c *Client) GetDevice(ctx context.Context) (*Device, error) {
	op := fmt.Sprintf("get device %q", c.device)
	body, err := c.do(ctx, op, http.MethodGet, c.devicePath(), nil, "", http.StatusOK)
	if err != nil {
		return nil, err
	}
	var d Device
	if err := decode(op, body, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ListModules returns every module on the device, including ones identityd does not own.
func (c *Client) ListModules(ctx context.Context) ([]Module, error) {
	op := fmt.Sprintf("list modules of device %q", c.device)
	body, err := c.do(ctx, op, http.MethodGet, c.devicePath()+"/modules", nil, "", http.StatusOK)
	if err != nil {
		return nil, err
	}
	var ms []Module
	if err := decode(op, body, &ms); err != nil {
		return nil, err
	}
	return ms, nil
}

// GetModule returns one module; a missing one is an *Error matching ErrNotFound.
func (c *Client) GetModule(ctx context.Context, moduleID string) (*Module, error) {
	op := c.moduleOp("get", moduleID)
	body, err := c.do(ctx, op, http.MethodGet, c.modulePath(moduleID), nil, "", http.StatusOK)
	if err != nil {
		return nil, err
	}
	return decodeModule(op, body)
}

// CreateModule creates a module with hub-generated keys (PUT without If-Match; upstream's
// body {"moduleId","deviceId"}). An existing module is an *Error matching ErrAlreadyExists;
// when Attempts > 1 an earlier attempt may have created it, so the caller should GetModule.
func (c *Client) CreateModule(ctx context.Context, moduleID string) (*Module, error) {
	return c.put(ctx, c.moduleOp("create", moduleID), putModule{ModuleID: moduleID, DeviceID: c.device}, "")
}

// UpdateModule replaces a module's managedBy and authentication (PUT with If-Match). etag
// "" means any version (upstream's unquoted "*"); a stale etag is an *Error matching
// ErrPreconditionFailed.
func (c *Client) UpdateModule(ctx context.Context, m Module, etag string) (*Module, error) {
	body := putModule{ModuleID: m.ModuleID, DeviceID: c.device, ManagedBy: m.ManagedBy, Authentication: m.Authentication}
	return c.put(ctx, c.moduleOp("update", m.ModuleID), body, ifMatch(etag))
}

// SetModuleKeys sets SAS keys (standard base64) on a module: upstream's "set keys" PUT.
func (c *Client) SetModuleKeys(ctx context.Context, moduleID, primary, secondary, etag string) (*Module, error) {
	return c.UpdateModule(ctx, Module{ModuleID: moduleID, Authentication: &Authentication{
		SymmetricKey: &SymmetricKey{PrimaryKey: primary, SecondaryKey: secondary}, Type: AuthSAS,
	}}, etag)
}

// DeleteModule deletes a module (If-Match as UpdateModule). Deleting an absent module
// succeeds with If-Match "*" (the hub's delete is idempotent).
func (c *Client) DeleteModule(ctx context.Context, moduleID, etag string) error {
	_, err := c.do(ctx, c.moduleOp("delete", moduleID), http.MethodDelete, c.modulePath(moduleID), nil, ifMatch(etag), http.StatusNoContent, http.StatusOK)
	return err
}

func (c *Client) put(ctx context.Context, op string, m putModule, match string) (*Module, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("iot hub: %s: encoding body: %w", op, err)
	}
	// Upstream accepts exactly 200; the public REST reference also lists 201.
	body, err := c.do(ctx, op, http.MethodPut, c.modulePath(m.ModuleID), raw, match, http.StatusOK, http.StatusCreated)
	if err != nil {
		return nil, err
	}
	return decodeModule(op, body)
}

func (c *Client) moduleOp(verb, moduleID string) string {
	return fmt.Sprintf("%s module %q of device %q", verb, moduleID, c.device)
}

// ifMatch: upstream sends an unquoted "*"; a specific etag is sent quoted, as HTTP and
// azure-iothub do (the hub accepts both forms).
func ifMatch(etag string) string {
	if etag == "" || etag == "*" {
		return "*"
	}
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

func (c *Client) devicePath() string { return "/devices/" + escapeSegment(c.device) }

func (c *Client) modulePath(moduleID string) string {
	return c.devicePath() + "/modules/" + escapeSegment(moduleID)
}

// escapeSegment encodes upstream's small set plus '%' and '/': upstream leaves those two
// alone, but the hub decodes each segment once, so an ID holding them would otherwise
// name another resource.
func escapeSegment(s string) string {
	// '%' first: the small set never produces or touches a '%' it did not write.
	return sas.EscapeSmallSet(strings.NewReplacer("%", "%25", "/", "%2F").Replace(s))
}

func decode(op string, body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &Error{Op: op, Err: fmt.Errorf("decoding the answer: %w", err)}
	}
	return nil
}

func decodeModule(op string, body []byte) (*Module, error) {
	var m Module
	if err := decode(op, body, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// do sends a request with flows.md §2's policy and returns the body of an expected answer.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, match string, want ...int) ([]byte, error) {
	target := "https://" + c.gateway + path + "?api-version=" + c.apiVersion
	attempts, retries, throttles := 0, 0, 0
	for {
		attempts++
		res, err := c.once(ctx, method, target, body, match)
		fail := func(e *Error) error { e.Attempts = attempts; return e }
		switch {
		case err != nil && res.noRetry:
			return nil, fail(&Error{Op: op, Err: err})
		case err != nil && ctx.Err() != nil:
			return nil, fail(&Error{Op: op, Err: ctx.Err()})
		case err != nil:
			if retries < c.waits.Retries {
				retries++
				if serr := c.sleep(ctx, c.waits.RetryDelay); serr != nil {
					return nil, fail(&Error{Op: op, Err: serr})
				}
				continue
			}
			return nil, fail(&Error{Op: op, Err: err, Network: true})
		}
		for _, w := range want {
			if res.status == w {
				return res.body, nil
			}
		}
		if res.status == http.StatusTooManyRequests && throttles < len(c.waits.ThrottleBackoff) {
			d := c.throttleWait(throttles, res.header.Get("Retry-After"))
			throttles++
			if serr := c.sleep(ctx, d); serr != nil {
				return nil, fail(&Error{Op: op, Status: res.status, Err: serr})
			}
			continue
		}
		// 500 and 503 are the hub's transient statuses (cloud-hub.md §8); upstream does not
		// resend them, we give them the same cloud_retries as a dropped connection.
		if (res.status == http.StatusInternalServerError || res.status == http.StatusServiceUnavailable) && retries < c.waits.Retries {
			retries++
			if serr := c.sleep(ctx, c.waits.RetryDelay); serr != nil {
				return nil, fail(&Error{Op: op, Status: res.status, Err: serr})
			}
			continue
		}
		e := hubError(op, method, res.status, res.header, res.body)
		if res.status >= 200 && res.status < 300 {
			e.unexpected = true
			e.Code = ""
		}
		e.Message = redact(e.Message, res.secrets)
		return nil, fail(e)
	}
}

// throttleWait is the wait before the n-th resend after a 429: Retry-After (integer
// seconds or an HTTP date) capped at RetryAfterMax, else upstream's table with jitter.
func (c *Client) throttleWait(n int, retryAfter string) time.Duration {
	w := c.waits
	if d, ok := c.retryAfter(strings.TrimSpace(retryAfter)); ok {
		return min(d, w.RetryAfterMax)
	}
	d := w.ThrottleBackoff[n]
	if n < len(w.ThrottleJitter) && w.ThrottleJitter[n] > 0 {
		d += rand.N(w.ThrottleJitter[n])
	}
	return d
}

// retryAfter converts a Retry-After value into a wait scaled by RetryAfterUnit.
func (c *Client) retryAfter(v string) (time.Duration, bool) {
	unit := c.waits.RetryAfterUnit
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		if s > 0 && unit > 0 && s > int64(math.MaxInt64/unit) {
			return c.waits.RetryAfterMax, true // overflow: as long as allowed
		}
		return time.Duration(s) * unit, true
	}
	if t, err := http.ParseTime(v); err == nil {
		secs := max(t.Sub(c.now()), 0).Seconds()
		return time.Duration(secs * float64(unit)), true
	}
	return 0, false
}

type result struct {
	status  int
	header  http.Header
	body    []byte
	noRetry bool     // a local failure (token minting) that resending cannot fix
	secrets []string // what must never appear in an error
}

// once is one attempt, bounded by Waits.Timeout from connecting to the end of the body.
func (c *Client) once(ctx context.Context, method, target string, body []byte, match string) (result, error) {
	actx, cancel := context.WithTimeout(ctx, c.waits.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, target, rd)
	if err != nil {
		return result{noRetry: true}, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if match != "" {
		req.Header.Set("If-Match", match)
	}
	var res result
	if c.sign != nil {
		// A fresh token for every request, so a retry after a long back-off never carries
		// an expired one.
		tok, err := sas.New(actx, sas.DeviceAudience(c.hub, c.device), c.now().Add(c.waits.TokenLifetime), "", c.sign)
		if err != nil {
			return result{noRetry: true}, fmt.Errorf("minting the device SAS token: %w", err)
		}
		req.Header.Set("Authorization", tok)
		res.secrets = tokenSecrets(tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return res, redactErr(err, res.secrets)
	}
	defer resp.Body.Close()
	res.status, res.header = resp.StatusCode, resp.Header
	res.body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return res, redactErr(fmt.Errorf("reading the answer to HTTP %d: %w", resp.StatusCode, err), res.secrets)
	}
	if len(res.body) > maxResponse {
		return result{noRetry: true}, fmt.Errorf("answer to HTTP %d exceeds %d bytes", resp.StatusCode, maxResponse)
	}
	return res, nil
}

// tokenSecrets lists the token and its signature (raw and decoded), the parts that must
// never reach an error string.
func tokenSecrets(tok string) []string {
	out := []string{tok}
	if _, after, ok := strings.Cut(tok, "&sig="); ok {
		sig, _, _ := strings.Cut(after, "&")
		out = append(out, sig)
		if dec, err := url.QueryUnescape(sig); err == nil {
			out = append(out, dec)
		}
	}
	return out
}

func redact(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[redacted]")
		}
	}
	return s
}

// redactErr keeps err (and its chain) unless its text holds a secret; then only the text
// survives, redacted.
func redactErr(err error, secrets []string) error {
	msg := err.Error()
	if r := redact(msg, secrets); r != msg {
		return errors.New(r)
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
