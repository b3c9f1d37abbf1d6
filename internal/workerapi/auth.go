package workerapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderAuth carries a request's signature: "<unix ms>.<hex HMAC-SHA256>"
// over the time, method, path and body with the cluster secret, so only
// processes that share the secret can call a worker, and a captured
// request stops working after MaxSkew.
const HeaderAuth = "X-Sorakaq-Cluster-Auth"

// MaxSkew bounds the age (and the clock difference) of a signed request.
const MaxSkew = 30 * time.Second

func sign(secret []byte, ms int64, method, path string, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ms, 10) + "\n" + method + "\n" + path + "\n" + hex.EncodeToString(sum[:])))
	return strconv.FormatInt(ms, 10) + "." + hex.EncodeToString(m.Sum(nil))
}

// errAuth is the answer to an unsigned or badly signed request.
var errAuth = errors.New("cluster authentication failed: this worker's internal API needs requests signed with the cluster secret (cluster.secret / SORAKAQ_CLUSTER_SECRET)")

// verify checks a request's signature against secret.
func verify(secret []byte, r *http.Request, body []byte, now time.Time) error {
	v := r.Header.Get(HeaderAuth)
	msStr, _, ok := strings.Cut(v, ".")
	if !ok {
		return errAuth
	}
	ms, err := strconv.ParseInt(msStr, 10, 64)
	if err != nil {
		return errAuth
	}
	if d := now.Sub(time.UnixMilli(ms)); d > MaxSkew || d < -MaxSkew {
		return errAuth
	}
	if !hmac.Equal([]byte(v), []byte(sign(secret, ms, r.Method, r.URL.Path, body))) {
		return errAuth
	}
	return nil
}
