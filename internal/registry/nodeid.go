package registry

import (
	"errors"
	"strings"
)

// MaxNodeIDBytes is the longest node id.
const MaxNodeIDBytes = 128

// errNodeID is what CheckNodeID says of a bad id; it does not repeat the
// id, which the caller shows as it sees fit.
var errNodeID = errors.New("must be a node id: 1 to 128 bytes, no '/', space or NUL, not \".\" or \"..\"")

// CheckNodeID is nil for an id a process may run under (node_id) and the
// registry may name a znode after: 1 to MaxNodeIDBytes bytes, no '/',
// space or NUL, not "." or "..". The configuration (node_id), the admin
// API (a worker set offline, a topic's workers) and the ZooKeeper
// registry (register, offline markers) all check ids with it.
func CheckNodeID(id string) error {
	if id == "" || len(id) > MaxNodeIDBytes || id == "." || id == ".." || strings.ContainsAny(id, "/ \x00") {
		return errNodeID
	}
	return nil
}
