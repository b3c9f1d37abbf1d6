package registry

import (
	"strings"
	"testing"
)

func TestCheckNodeID(t *testing.T) {
	for _, ok := range []string{"w1", "worker-1.eu", "host_name", strings.Repeat("w", MaxNodeIDBytes), "a..b"} {
		if err := CheckNodeID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "w/1", "w 1", "w\x001", strings.Repeat("w", MaxNodeIDBytes+1)} {
		if CheckNodeID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
