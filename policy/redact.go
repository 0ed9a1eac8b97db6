package policy

import (
	"errors"
	"net/url"
	"strings"
)

// redacted replaces the parts of a bundle URL that may carry a credential.
const redacted = "REDACTED"

// RedactURL returns raw with its userinfo, query and fragment replaced by REDACTED, for
// status.json, logs and errors: bundle servers are often reached with a SAS token in the
// query or a password in the userinfo, and those must never reach a file or a log that
// another uid may read. An unparseable URL is replaced whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL, " + redacted + ")"
	}
	if u.Opaque != "" {
		u.Opaque = redacted
	}
	if u.User != nil {
		u.User = url.User(redacted)
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = redacted, false
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// urlSecrets lists the substrings of raw that must not be shown: the query (raw and
// decoded), the userinfo's password, the fragment, and single query values long enough
// to be credentials (replacing "r" of sp=r would garble the whole message).
func urlSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return []string{raw}
	}
	var out []string
	add := func(s string, min int) {
		if len(s) >= min {
			out = append(out, s)
		}
	}
	add(u.RawQuery, 1)
	if q, err := url.QueryUnescape(u.RawQuery); err == nil {
		add(q, 1)
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			add(v, 8)
		}
	}
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			add(p, 4)
		}
	}
	add(u.Fragment, 1)
	add(u.Opaque, 1)
	return out
}

// redactedError is an error whose message had the bundle URL's secrets removed. It
// unwraps to the cause below net/http's *url.Error (which prints the URL), so errors.Is
// still sees context.Canceled and the like.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// redactError rewrites err's message so that no secret of raw (the configured bundle
// URL) nor of any URL net/http reports (a redirect's target) remains.
func redactError(err error, raw string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var cause error = err
	var ue *url.Error
	if errors.As(err, &ue) {
		// The URL net/http names may be a redirect's, which raw does not cover.
		msg = strings.ReplaceAll(msg, ue.URL, RedactURL(ue.URL))
		for _, s := range urlSecrets(ue.URL) {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
		cause = ue.Err
	}
	msg = strings.ReplaceAll(msg, raw, RedactURL(raw))
	for _, s := range urlSecrets(raw) {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return &redactedError{msg: msg, cause: cause}
}
