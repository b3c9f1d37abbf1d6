package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/sorakaq/sorakaq/internal/destination"
)

// ErrHostBusy matches (errors.Is) the error of a call redirected to
// another destination that had no room (see Options.Destinations). It is
// not permanent: a later attempt may get through.
var ErrHostBusy = errors.New("callback: redirect target has no room")

type hostBusyError struct {
	host string
	why  destination.Reason
}

func (e *hostBusyError) Error() string {
	return fmt.Sprintf("callback: redirect target %s has no room (%s)", e.host, e.why)
}
func (e *hostBusyError) Is(target error) bool { return target == ErrHostBusy }

// hostKey is u's origin as written: lowercased host and port, the
// scheme's default port when u has none ("example.com:443"). Credentials
// are not sent across a redirect that changes it; the per-host slot is
// keyed by the dialled address instead (DestinationKey).
func hostKey(u *url.URL) string {
	return net.JoinHostPort(normHost(u.Hostname()), urlPort(u))
}

// urlPort is u's port, or its scheme's default.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// callState is what a call in flight keeps across redirects.
type callState struct {
	key  string             // destination key of the redirect target whose slot is held
	held destination.Ticket // that slot; zero while on the first hop's host
}

// DestinationKey is the flow-control key of a callback URL (package
// destination): the address a call to it dials first, as IP:port
// (IPv4-mapped addresses as IPv4), so that any spelling of one
// receiver's address, and any number of names resolving to it, share
// one set of limits (security review §4: eight spellings of 127.0.0.1
// used to get eight caps). Names are resolved once for the key and the
// dial, and cached for 10 s. A name that does not resolve gets its
// host:port as written (the call will fail the same way, and those
// failures count for that name). "" for a URL that cannot be called
// (the call fails before any network access).
func (c *Caller) DestinationKey(ctx context.Context, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return ""
	}
	key, err := c.slotKey(ctx, u.Hostname(), urlPort(u))
	if err != nil {
		return hostKey(u)
	}
	return key
}
