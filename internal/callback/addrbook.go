package callback

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Resolved names are kept this long, and at most this many: the per-host
// cap and the dial use the same answer, and a callback does not cost a
// DNS query each.
const (
	addrTTL  = 10 * time.Second
	maxNames = 4096
)

// addrBook resolves callback host names for both the per-host slot and
// the dial. The slot is keyed by the address a call will reach, not by
// how its host is written: eight spellings of 127.0.0.1 (or any number of
// a tenant's own names for one receiver) used to get eight caps. Per
// name it remembers the address a connection last reached and puts it
// first, so after a refused first address (localhost's ::1 when the
// receiver listens on 127.0.0.1 only) the key follows where calls go.
type addrBook struct {
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	mu     sync.Mutex
	names  map[string]*addrEntry
}

type addrEntry struct {
	addrs   []netip.Addr // preferred first
	expires time.Time
}

func newAddrBook() *addrBook {
	return &addrBook{names: make(map[string]*addrEntry),
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}}
}

// resolve returns host's addresses, preferred first; host is a
// normalised name (normHost), not an IP literal.
func (b *addrBook) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	now := time.Now()
	b.mu.Lock()
	if e := b.names[host]; e != nil && now.Before(e.expires) {
		addrs := e.addrs
		b.mu.Unlock()
		return addrs, nil
	}
	b.mu.Unlock()
	found, err := b.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	addrs := make([]netip.Addr, len(found))
	for i, a := range found {
		addrs[i] = a.Unmap()
	}
	b.mu.Lock()
	if len(b.names) >= maxNames {
		for k, e := range b.names {
			if !now.Before(e.expires) {
				delete(b.names, k)
			}
		}
		if len(b.names) >= maxNames {
			clear(b.names)
		}
	}
	b.names[host] = &addrEntry{addrs: addrs, expires: now.Add(addrTTL)}
	b.mu.Unlock()
	return addrs, nil
}

// reached puts a, which a connection to host just reached, first.
func (b *addrBook) reached(host string, a netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.names[host]
	if e == nil || len(e.addrs) == 0 || e.addrs[0] == a {
		return
	}
	addrs := []netip.Addr{a}
	for _, x := range e.addrs {
		if x != a {
			addrs = append(addrs, x)
		}
	}
	e.addrs = addrs
}

// slotKey is the destination key of a call to host:port: the address it
// dials first, as IP:port (IPv4-mapped addresses as IPv4). Names are
// resolved within the dial timeout.
func (c *Caller) slotKey(ctx context.Context, host, port string) (string, error) {
	host = normHost(host)
	if a, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(a.WithZone("").Unmap().String(), port), nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.dialer.Timeout)
	defer cancel()
	addrs, err := c.book.resolve(ctx, host)
	if err != nil {
		return "", fmt.Errorf("callback: %w", err)
	}
	return net.JoinHostPort(addrs[0].String(), port), nil
}
