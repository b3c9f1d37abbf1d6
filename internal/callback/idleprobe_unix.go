//go:build unix

package callback

import (
	"net"
	"syscall"
)

// idleClean says whether an idle keep-alive connection may carry the next
// request: nothing has arrived on it since its last answer (no stray
// bytes, no 408 a receiver sends when its idle timer fires) and the
// receiver has not closed it. net/http learns this from the reader it
// keeps on every idle connection; here one non-blocking peek asks the
// socket (about a microsecond). A timed-out read cannot: Go's poller
// answers an expired deadline without reading.
func idleClean(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	clean := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		clean = n < 0 && (e == syscall.EAGAIN || e == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && clean
}
