package superconfig

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// canonicalPolicy parses a renewal policy string (config.md §3.5) and returns its
// canonical form: "N%", or "Nday" when a time is a whole number of days, else "Nmin".
func canonicalPolicy(s string) (string, error) {
	num := func(d string) (uint64, bool) {
		if d == "" || strings.TrimLeft(d, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseUint(d, 10, 64)
		return n, err == nil
	}
	switch {
	case strings.HasSuffix(s, "%"):
		if n, ok := num(strings.TrimSuffix(s, "%")); ok && n >= 1 && n <= 99 {
			return fmt.Sprintf("%d%%", n), nil
		}
	case strings.HasSuffix(s, "min"):
		if n, ok := num(strings.TrimSuffix(s, "min")); ok && n >= 1 {
			if n%1440 == 0 {
				return fmt.Sprintf("%dday", n/1440), nil
			}
			return fmt.Sprintf("%dmin", n), nil
		}
	case strings.HasSuffix(s, "day"):
		if n, ok := num(strings.TrimSuffix(s, "day")); ok && n >= 1 {
			return fmt.Sprintf("%dday", n), nil
		}
	}
	return "", fmt.Errorf("invalid renewal policy %q: expected \"<1-99>%%\", \"<N>min\" or \"<N>day\"", s)
}

// decodeBase64 accepts standard base64 with or without padding.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// ConnectionString is a parsed IoT Hub device connection string.
type ConnectionString struct {
	HostName string
	DeviceID string
	Key      []byte
}

// ParseConnectionString splits "HostName=..;DeviceId=..;SharedAccessKey=.." (keys are
// case-sensitive, other parts ignored, the key is base64 with optional padding).
func ParseConnectionString(s string) (ConnectionString, error) {
	var host, id, key *string
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch k {
		case "HostName":
			host = &v
		case "DeviceId":
			id = &v
		case "SharedAccessKey":
			key = &v
		}
	}
	switch {
	case host == nil:
		return ConnectionString{}, fmt.Errorf(`required parameter "HostName" is missing`)
	case id == nil:
		return ConnectionString{}, fmt.Errorf(`required parameter "DeviceId" is missing`)
	case key == nil:
		return ConnectionString{}, fmt.Errorf(`required parameter "SharedAccessKey" is missing`)
	}
	b, err := decodeBase64(*key)
	if err != nil {
		return ConnectionString{}, fmt.Errorf(`connection string's "SharedAccessKey" parameter could not be decoded from base64: %w`, err)
	}
	return ConnectionString{HostName: *host, DeviceID: *id, Key: b}, nil
}
