package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const latestVersionsURL = "https://aka.ms/azure-iotedge-latest-versions"

// fetchLatestVersions downloads the product versions document (through proxy if set).
func fetchLatestVersions(ctx context.Context, proxy string) ([]byte, error) {
	tr := &http.Transport{}
	if proxy != "" {
		u, err := url.Parse(proxy)
		if err != nil {
			return nil, fmt.Errorf("invalid proxy URI %q: %w", proxy, err)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", latestVersionsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", latestVersionsURL, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// latestVersionsDoc is the part of the versions document check reads.
type latestVersionsDoc struct {
	Channels []struct {
		Products []struct {
			ID         string `json:"id"`
			Components []struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"components"`
		} `json:"products"`
	} `json:"channels"`
}

func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

func (c *checker) aziotVersion() checkResult {
	expected := c.opts.expectedVersion
	if expected == "" {
		if c.identityd != nil && c.identityd.Provisioning != nil && c.identityd.Provisioning.LocalGatewayHostname != "" {
			return ignored()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		data, err := c.a.latestVersions(ctx, c.opts.proxyURI)
		if err != nil {
			return warning(errDetails("could not fetch the latest versions of aziot-identity-service", err)...)
		}
		var doc latestVersionsDoc
		if err := json.Unmarshal(data, &doc); err != nil {
			return warning(errDetails("could not parse the latest versions document", err)...)
		}
		for _, ch := range doc.Channels {
			for _, p := range ch.Products {
				if p.ID != "aziot-edge" {
					continue
				}
				for _, comp := range p.Components {
					if comp.Name == "aziot-identity-service" && majorMinor(comp.Version) == majorMinor(version) {
						expected = comp.Version
					}
				}
			}
		}
		if expected == "" {
			return warning(fmt.Sprintf("could not find the latest aziot-identity-service %s.x in the versions document", majorMinor(version)))
		}
	}
	c.info["expected_version"] = expected
	c.info["actual_version"] = version
	if expected != version {
		return warning(fmt.Sprintf("Installed aziot-identity-service package has version %s but %s is the latest stable version available.", version, expected),
			"Please see https://aka.ms/aziot-update-runtime for update instructions.")
	}
	return ok()
}

// sntpOffset queries an SNTP server once and returns the local clock's offset.
func sntpOffset(server string, now func() time.Time) (time.Duration, error) {
	conn, err := net.DialTimeout("udp", server, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := make([]byte, 48)
	req[0] = 0x1b // LI 0, version 3, mode 3 (client)
	t1 := now()
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	resp := make([]byte, 48)
	n, err := conn.Read(resp)
	if err != nil {
		return 0, err
	}
	t4 := now()
	if n < 48 {
		return 0, errors.New("short SNTP reply")
	}
	ntpTime := func(b []byte) time.Time {
		sec := binary.BigEndian.Uint32(b[0:4])
		frac := binary.BigEndian.Uint32(b[4:8])
		const ntpEpochOffset = 2208988800
		return time.Unix(int64(sec)-ntpEpochOffset, int64(uint64(frac)*1e9>>32))
	}
	t2, t3 := ntpTime(resp[32:40]), ntpTime(resp[40:48])
	return (t2.Sub(t1) + t3.Sub(t4)) / 2, nil
}

func (c *checker) hostLocalTime() checkResult {
	off, err := sntpOffset(c.opts.ntpServer, c.a.now)
	if err != nil {
		return warning(errDetails(fmt.Sprintf("Could not query NTP server %s", c.opts.ntpServer), err)...)
	}
	c.info["offset_ms"] = off.Milliseconds()
	if off < 0 {
		off = -off
	}
	if off >= 10*time.Second {
		return warning(fmt.Sprintf("Time on the device is out of sync with the NTP server %s by %s.", c.opts.ntpServer, off.Round(time.Millisecond)),
			"Ensure that device time is synced.")
	}
	return ok()
}

// hubHost resolves the hub of the connectivity checks (cli.md §5.2): the flag, else
// the manual config's gateway or hub, else for DPS the manual hub of prev_state.
func (c *checker) hubHost() (string, checkResult) {
	if c.opts.iothubHostname != "" {
		return c.opts.iothubHostname, ok()
	}
	if c.identityd == nil {
		return "", skipped()
	}
	p := c.identityd.Provisioning
	switch p.Source {
	case "manual":
		return c.identityd.ManualHub(), ok()
	case "dps":
		if p.LocalGatewayHostname != "" {
			return "", ignored()
		}
		if c.prevState != nil {
			if h := c.prevState.ManualHub(); h != "" {
				return h, ok()
			}
		}
		return "", warning("Could not determine the IoT Hub hostname of a device provisioned with DPS.",
			"Re-run with --iothub-hostname <IOTHUB_HOSTNAME> to check connectivity to the IoT Hub.")
	}
	return "", ignored()
}

func (c *checker) timeout() time.Duration {
	if c.identityd != nil && c.identityd.CloudTimeoutSec > 0 {
		return time.Duration(c.identityd.CloudTimeoutSec) * time.Second
	}
	return 70 * time.Second
}

// tlsHandshake connects to host:port (through an HTTP CONNECT proxy if given) and
// completes a verified TLS handshake for host.
func (c *checker) tlsHandshake(host string, port int, proxy string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout())
	defer cancel()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var d net.Dialer
	var conn net.Conn
	var err error
	if proxy != "" {
		conn, err = dialViaProxy(ctx, proxy, addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("could not connect to %s: %w", addr, err)
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: c.a.net.Roots, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake with %s failed: %w", addr, err)
	}
	return nil
}

func dialViaProxy(ctx context.Context, proxy, addr string) (net.Conn, error) {
	u, err := url.Parse(proxy)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("invalid proxy URI %q", proxy)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("could not connect to proxy %s: %w", u.Host, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("proxy CONNECT: %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

func (c *checker) hubCheck(port int, proxy string) checkResult {
	host, r := c.hubHost()
	if r.Result != "ok" {
		return r
	}
	c.info["iothub_hostname"] = host
	if err := c.tlsHandshake(host, port, proxy); err != nil {
		return failed(errDetails(fmt.Sprintf("Could not connect to %s:%d", host, port), err)...)
	}
	return ok()
}

func (c *checker) hubAMQP() checkResult  { return c.hubCheck(c.a.net.AMQPPort, "") }
func (c *checker) hubHTTPS() checkResult { return c.hubCheck(c.a.net.HTTPSPort, c.opts.proxyURI) }
func (c *checker) hubMQTT() checkResult  { return c.hubCheck(c.a.net.MQTTPort, "") }

func (c *checker) dpsEndpoint() checkResult {
	if c.identityd == nil {
		return skipped()
	}
	p := c.identityd.Provisioning
	if p.Source != "dps" {
		return ignored()
	}
	u, err := url.Parse(p.GlobalEndpoint)
	if err != nil || u.Hostname() == "" {
		return failed(fmt.Sprintf("invalid DPS global endpoint %q", p.GlobalEndpoint))
	}
	port := 443
	if u.Port() != "" {
		port, _ = strconv.Atoi(u.Port())
	}
	if c.a.net.DPSPort != 0 {
		port = c.a.net.DPSPort
	}
	c.info["dps_hostname"] = u.Hostname()
	if err := c.tlsHandshake(u.Hostname(), port, c.opts.proxyURI); err != nil {
		return failed(errDetails(fmt.Sprintf("Could not connect to %s:%d", u.Hostname(), port), err)...)
	}
	return ok()
}
