package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
)

// defaultDeny is the deny list used when Options.Deny is nil: link-local
// addresses and the cloud metadata endpoints (AWS/GCP/Azure/OpenStack
// 169.254.169.254 is inside 169.254.0.0/16; AWS IPv6 fd00:ec2::254; Alibaba
// 100.100.100.200) plus the "this host" addresses 0.0.0.0/8 and ::, which
// Linux connects to the local machine.
var defaultDeny = [...]string{
	"169.254.0.0/16",
	"fe80::/10",
	"100.100.100.200/32",
	"fd00:ec2::254/128",
	"0.0.0.0/8",
	"::/128",
}

// DefaultDeny returns (a copy of) the deny list used when Options.Deny is
// nil. To add to it rather than replace it:
//
//	Deny: append(callback.DefaultDeny(), "10.0.0.0/8")
func DefaultDeny() []string { return append([]string(nil), defaultDeny[:]...) }

// ErrDenied matches (errors.Is) every *DeniedError. Its own text is fixed
// and says nothing of the destination: it is what a message's last_error
// shows (PublicError), since the detailed reason (which address a name
// resolved to, which rule) would tell a submitter about the internal
// network.
var ErrDenied = errors.New("callback: destination denied by the callback policy (callback.deny, allow, private_networks); the reason is in the server log")

// PublicError is err as a submitter may see it: a refused destination
// becomes ErrDenied's fixed text; anything else is unchanged.
func PublicError(err error) error {
	if errors.Is(err, ErrDenied) {
		return ErrDenied
	}
	return err
}

// Private networks: what Options.PrivateNetworks admits besides the
// destinations Allow admits by name or address.
const (
	PrivateAllow    = "allow"    // loopback and private networks reachable ("" too)
	PrivateLoopback = "loopback" // loopback reachable, private networks refused
	PrivateDeny     = "deny"     // both refused
)

// cgnat is the shared address space (RFC 6598), used inside clouds and
// overlay networks like a private range.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// isPrivate says whether a (unmapped) is in a private network: RFC 1918,
// shared address space, IPv6 unique local or the old site-local range.
func isPrivate(a netip.Addr) bool {
	return a.IsPrivate() || cgnat.Contains(a) || (a.Is6() && a.As16()[0] == 0xfe && a.As16()[1]&0xc0 == 0xc0)
}

// DeniedError is the error of a call whose destination (the URL's host, a
// redirect target, or the IP address actually dialled) is refused by
// Options.Deny or not admitted by Options.Allow. It is permanent (IsPermanent):
// calling again will not help.
type DeniedError struct {
	Host   string // the host name or IP address refused
	IsAddr bool   // Host is an IP address (else a host name)
	// Rule is the Deny entry that matched, as written in the configuration;
	// "" when refused because Allow is set and nothing in it matched.
	Rule string
	// Why, when set, is the reason instead of Rule (a private network,
	// sorakaQ's own listener).
	Why string
}

func (e *DeniedError) Error() string {
	kind := "host"
	if e.IsAddr {
		kind = "address"
	}
	if e.Why != "" {
		return "callback: " + kind + " " + e.Host + " is denied: " + e.Why
	}
	if e.Rule == "" {
		return "callback: " + kind + " " + e.Host + " is denied: not in callback.allow"
	}
	return "callback: " + kind + " " + e.Host + " is denied by callback.deny (" + e.Rule + ")"
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// ruleSet is a parsed allow or deny list.
type ruleSet struct {
	prefixes []prefixRule      // IPs (as /32 or /128) and CIDRs
	exact    map[string]string // host name -> entry as written
	suffixes []suffixRule      // "*.example.com"
}

type prefixRule struct {
	p    netip.Prefix
	text string
}

type suffixRule struct {
	suffix string // ".example.com"
	text   string
}

func (r *ruleSet) empty() bool {
	return len(r.prefixes) == 0 && len(r.exact) == 0 && len(r.suffixes) == 0
}

// parseRules parses an Allow or Deny list; name is the config key used in
// error texts.
func parseRules(name string, list []string) (ruleSet, error) {
	var rs ruleSet
	for _, raw := range list {
		e := strings.ToLower(strings.TrimSpace(raw))
		text := strings.TrimSpace(raw)
		bad := func(why string) (ruleSet, error) {
			return ruleSet{}, fmt.Errorf("callback: bad %s entry %q: %s", name, raw, why)
		}
		switch {
		case e == "":
			return bad("empty")
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return bad("not a CIDR")
			}
			rs.prefixes = append(rs.prefixes, prefixRule{normPrefix(p), text})
			continue
		}
		if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")); err == nil {
			a = a.WithZone("").Unmap()
			rs.prefixes = append(rs.prefixes, prefixRule{netip.PrefixFrom(a, a.BitLen()), text})
			continue
		}
		e = strings.TrimSuffix(e, ".")
		wild := strings.HasPrefix(e, "*.")
		host := strings.TrimPrefix(e, "*.")
		if !validHostName(host) {
			return bad(`not a host name, "*.domain", IP address or CIDR`)
		}
		if wild {
			rs.suffixes = append(rs.suffixes, suffixRule{"." + host, text})
			continue
		}
		if rs.exact == nil {
			rs.exact = make(map[string]string)
		}
		if _, dup := rs.exact[host]; !dup {
			rs.exact[host] = text
		}
	}
	return rs, nil
}

// normPrefix masks p and turns an IPv4-mapped IPv6 prefix
// (::ffff:a.b.c.d/96+n) into the IPv4 prefix a.b.c.d/n, since addresses are
// unmapped before matching.
func normPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
}

// validHostName accepts what may appear as a host name in a rule: labels of
// letters (any script), digits, '-' and '_', separated by single dots.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return false
		}
		for _, r := range label {
			if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 0x7f {
				continue
			}
			return false
		}
	}
	return true
}

func (r *ruleSet) matchName(host string) (string, bool) {
	if t, ok := r.exact[host]; ok {
		return t, true
	}
	for _, s := range r.suffixes {
		if len(host) > len(s.suffix) && strings.HasSuffix(host, s.suffix) {
			return s.text, true
		}
	}
	return "", false
}

func (r *ruleSet) matchAddr(a netip.Addr) (string, bool) {
	for _, p := range r.prefixes {
		if p.p.Contains(a) {
			return p.text, true
		}
	}
	return "", false
}

// policy is a Caller's allow/deny configuration.
type policy struct {
	allow, deny ruleSet
	private     string // PrivateAllow, PrivateLoopback or PrivateDeny
	self        *selfSet
	// err is set when Allow or Deny has an invalid entry: every call then
	// fails with it (fail closed) until the configuration is fixed.
	err error
}

func newPolicy(o Options) *policy {
	deny := o.Deny
	if deny == nil {
		deny = defaultDeny[:]
	}
	p := &policy{private: o.PrivateNetworks, self: newSelfSet(o.SelfPorts)}
	if p.private == "" {
		p.private = PrivateAllow
	}
	var err error
	if p.deny, err = parseRules("callback.deny", deny); err == nil {
		if p.allow, err = parseRules("callback.allow", o.Allow); err == nil {
			err = validPrivate(o.PrivateNetworks)
		}
	}
	if err != nil {
		return &policy{err: err, self: p.self}
	}
	return p
}

func validPrivate(v string) error {
	switch v {
	case "", PrivateAllow, PrivateLoopback, PrivateDeny:
		return nil
	}
	return fmt.Errorf("callback: bad callback.private_networks %q: must be allow, loopback or deny", v)
}

// selfSet is where sorakaQ's own listeners are: their ports on this
// host's addresses. They are never called back, whatever Allow says: a
// callback to the admin port let anyone guess the console password from
// the receive port, status code by status code.
type selfSet struct {
	mu    sync.RWMutex
	ports map[uint16]bool
	local map[netip.Addr]bool // this host's interface addresses (read at start)
}

func newSelfSet(ports []int) *selfSet {
	s := &selfSet{ports: map[uint16]bool{}, local: map[netip.Addr]bool{}}
	s.add(ports...)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					s.local[ip.Unmap()] = true
				}
			}
		}
	}
	return s
}

func (s *selfSet) add(ports ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ports {
		if p > 0 && p < 1<<16 {
			s.ports[uint16(p)] = true
		}
	}
}

// is says whether ap (unmapped) is one of sorakaQ's own listeners.
func (s *selfSet) is(ap netip.AddrPort) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := ap.Addr()
	return s.ports[ap.Port()] && (a.IsLoopback() || a.IsUnspecified() || s.local[a])
}

// normHost lowercases a URL host name and drops a trailing dot.
func normHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// checkHost checks a URL host (name or IP literal, no port, no brackets)
// before anything is resolved or dialled. It returns an error if the host is
// refused whatever it resolves to; nameAllowed reports that the host name
// itself matched an Allow entry, so its addresses need only pass Deny.
// A nil error with nameAllowed false for a host name means "decided on the
// addresses it resolves to" (see checkAddr).
func (p *policy) checkHost(host string) (nameAllowed bool, err error) {
	if p.err != nil {
		return false, p.err
	}
	host = normHost(host)
	if a, err := netip.ParseAddr(host); err == nil {
		return false, p.checkAddr(a, false)
	}
	if rule, ok := p.deny.matchName(host); ok {
		return false, &DeniedError{Host: host, Rule: rule}
	}
	if p.allow.empty() {
		return false, nil
	}
	if _, ok := p.allow.matchName(host); ok {
		return true, nil
	}
	// No name rule admits it. Unless an Allow CIDR/IP might admit the address
	// it resolves to, refuse now, without a DNS query. Non-ASCII names are
	// left to the dial-time check, which sees their punycode form.
	if len(p.allow.prefixes) == 0 && isASCII(host) {
		return false, &DeniedError{Host: host}
	}
	return false, nil
}

// checkAddr checks an IP address: the URL's host when it is an IP literal,
// else each address actually dialled. Deny always wins; Allow, when set,
// must admit the address unless the host name was already admitted.
//
// Loopback and private addresses refused by PrivateNetworks pass only if
// Allow admits them (by the host's name or the address).
func (p *policy) checkAddr(a netip.Addr, nameAllowed bool) error {
	if p.err != nil {
		return p.err
	}
	a = a.WithZone("").Unmap()
	host, reach := a.String(), a
	if v4, ok := embeddedV4(a); ok {
		// Where NAT64 or 6to4 routes these, dialling them reaches v4
		// ([64:ff9b::169.254.169.254] is the metadata endpoint): deny and
		// the private networks are judged on v4 too.
		host, reach = host+" ("+v4.String()+")", v4
	}
	for _, x := range []netip.Addr{a, reach} {
		if rule, ok := p.deny.matchAddr(x); ok {
			return &DeniedError{Host: host, IsAddr: true, Rule: rule}
		}
	}
	if nameAllowed {
		return nil
	}
	_, allowed := p.allow.matchAddr(a)
	if !allowed && reach != a {
		_, allowed = p.allow.matchAddr(reach)
	}
	switch {
	case allowed:
		return nil
	case reach.IsLoopback() && p.private == PrivateDeny:
		return &DeniedError{Host: host, IsAddr: true, Why: "a loopback address, refused by callback.private_networks (deny); admit it in callback.allow"}
	case isPrivate(reach) && p.private != PrivateAllow:
		return &DeniedError{Host: host, IsAddr: true, Why: "a private address, refused by callback.private_networks (" + p.private + "); admit it in callback.allow"}
	case p.allow.empty():
		return nil
	}
	return &DeniedError{Host: host, IsAddr: true}
}

// embeddedV4 returns the IPv4 address an IPv6 address carries in a form a
// network may translate or tunnel to it: IPv4-compatible (::a.b.c.d,
// not :: or ::1), IPv4-translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::/96
// and the local-use 64:ff9b:1::/48, RFC 6052) and 6to4 (2002::/16).
// IPv4-mapped addresses are unmapped before this.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	zero := func(from, to int) bool {
		for _, x := range b[from:to] {
			if x != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case zero(0, 12) && !zero(12, 15): // ::a.b.c.d above ::1 (::0.0.0.x is no real IPv4)
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case zero(0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0: // ::ffff:0:a.b.c.d
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(4, 12): // 64:ff9b::/96
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1: // 64:ff9b:1::/48
		return netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}), true
	case b[0] == 0x20 && b[1] == 0x02: // 2002:aabb:ccdd::/48
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// checkDial checks an address about to be connected to: never one of
// sorakaQ's own listeners, then checkAddr.
func (p *policy) checkDial(ap netip.AddrPort, nameAllowed bool) error {
	ap = netip.AddrPortFrom(ap.Addr().WithZone("").Unmap(), ap.Port())
	if p.err == nil && p.self.is(ap) {
		return &DeniedError{Host: ap.String(), IsAddr: true, Why: "it is one of sorakaQ's own listeners"}
	}
	return p.checkAddr(ap.Addr(), nameAllowed)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}

// dialContext is the Transport's DialContext: it checks the host name of
// addr (host:port, not yet resolved) and then, through the dialer's
// ControlContext hook, every IP address actually connected to, right
// before the connect(2). A name that resolves (or is rebound) to a
// denied address is therefore refused without any packet sent to that
// address. Names are dialled at the addresses of the Caller's addrBook,
// preferred first, the same answer the per-host slot was keyed by.
func (c *Caller) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	nameAllowed, err := c.policy.checkHost(host)
	if err != nil {
		return nil, err
	}
	d := *c.dialer
	d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("callback: cannot check dialled address %q: %w", address, err)
		}
		return c.policy.checkDial(ap, nameAllowed)
	}
	name := normHost(host)
	if _, err := netip.ParseAddr(name); err == nil {
		return d.DialContext(ctx, network, addr)
	}
	addrs, err := c.book.resolve(ctx, name)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			c.book.reached(name, a)
			return conn, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
		// a refused or denied address: the name's next one may be fine,
		// as with net.Dialer (each address is checked on its own)
	}
	return nil, first
}
