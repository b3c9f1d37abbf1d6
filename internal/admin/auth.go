package admin

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/message"
)

// CookieName is the session cookie.
const CookieName = "sorakaq_session"

// AuthOptions configure console login. The password is kept only as a
// bcrypt hash: PasswordHash if set, else Password hashed at start.
type AuthOptions struct {
	Username     string
	Password     string
	PasswordHash string
	SessionTTL   time.Duration
	// APIToken, when set, lets scripts call the admin API with
	// "Authorization: Bearer <token>" instead of a session (no CSRF token
	// needed: browsers never send it by themselves).
	APIToken string
	// SecureCookie marks the cookie Secure (when served over TLS).
	SecureCookie bool
}

// Defaults of AuthOptions. DefaultPassword is the original's
// admin/admin; a warning is logged while it is in use (New does not fill
// it in: an empty Password and PasswordHash are an error).
const (
	DefaultUsername   = "admin"
	DefaultPassword   = "admin"
	DefaultSessionTTL = 12 * time.Hour
)

type session struct {
	user    string
	csrf    string
	expires time.Time
}

// auth holds the sessions (in memory: a restart of admin logs everyone
// out) and checks requests.
type auth struct {
	opts      AuthOptions
	hash      []byte
	isDefault bool
	log       *zap.Logger

	logins *loginGuard
	checks atomic.Int64 // passwords checked (bcrypt runs), for tests

	mu       sync.Mutex
	sessions map[string]*session
}

func newAuth(o AuthOptions, log *zap.Logger) (*auth, error) {
	if o.Username == "" {
		o.Username = DefaultUsername
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	a := &auth{opts: o, log: log, sessions: map[string]*session{}, logins: newLoginGuard()}
	switch {
	case o.PasswordHash != "":
		if _, err := bcrypt.Cost([]byte(o.PasswordHash)); err != nil {
			return nil, fmt.Errorf("admin.password_hash is not a bcrypt hash: %w", err)
		}
		a.hash = []byte(o.PasswordHash)
		a.isDefault = bcrypt.CompareHashAndPassword(a.hash, []byte(DefaultPassword)) == nil
	default:
		if o.Password == "" {
			return nil, errors.New("admin.password (or admin.password_hash) must be set")
		}
		h, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("hashing admin.password: %w", err)
		}
		a.hash = h
		a.isDefault = o.Password == DefaultPassword
	}
	if a.isDefault {
		log.Warn("the console still uses the default password admin/admin, so it accepts logins only from this machine (loopback): set admin.password_hash (bcrypt) or SORAKAQ_ADMIN_PASSWORD")
	}
	return a, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// Me is what login and /auth/me answer.
type Me struct {
	Username        string `json:"username"`
	CSRFToken       string `json:"csrf_token"`
	ExpiresAt       int64  `json:"expires_at"`
	DefaultPassword bool   `json:"default_password"`
}

var (
	errUnauthorized = errs.Unauthorized
	errForbidden    = errs.Forbidden
	errLogin        = fmt.Errorf("%w: login required", errUnauthorized)
)

func (a *auth) login(c *gin.Context, maxBody int64) (any, error) {
	body, err := httpapi.ReadBody(c, maxBody)
	if err != nil {
		return nil, err
	}
	var r struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := message.DecodeStrict(body, &r); err != nil {
		return nil, err
	}
	peer := c.ClientIP() // X-Forwarded-For only from http.trusted_proxies
	if a.isDefault && !fromThisMachine(c.Request, peer) {
		// Protected mode (Redis' idea): with the well-known password the
		// console is only for this machine, whatever was typed, so that
		// a fresh install exposed by mistake is not an open console and
		// remote guesses learn nothing.
		a.log.Warn("console login from another machine refused: the console still uses the default password", zap.String("remote", peer))
		return nil, fmt.Errorf("%w: the console still uses its default password, so it accepts logins only from this machine (loopback, not through a proxy); set admin.password_hash (bcrypt) or SORAKAQ_ADMIN_PASSWORD to log in from elsewhere", errForbidden)
	}
	if err := a.logins.admit(peer); err != nil {
		return nil, err
	}
	select { // a flood of checks must not take every CPU
	case a.logins.checks <- struct{}{}:
	case <-c.Done():
		return nil, errs.E(errs.Unauthorized, "", c.Err())
	}
	if err := a.logins.admit(peer); err != nil { // again: others may have failed meanwhile
		<-a.logins.checks
		return nil, err
	}
	a.checks.Add(1)
	userOK := subtle.ConstantTimeCompare([]byte(r.Username), []byte(a.opts.Username)) == 1
	passOK := bcrypt.CompareHashAndPassword(a.hash, []byte(r.Password)) == nil // always run: same time either way
	<-a.logins.checks
	if !userOK || !passOK {
		a.logins.failed(peer)
		// Not the submitted user name: a password typed into that field
		// would end up in the log.
		a.log.Warn("console login failed", zap.Bool("known_user", userOK), zap.String("remote", peer), zap.String("peer", c.Request.RemoteAddr))
		return nil, fmt.Errorf("%w: invalid username or password", errUnauthorized)
	}
	a.logins.succeeded(peer)
	s := &session{user: a.opts.Username, csrf: randomHex(16), expires: time.Now().Add(a.opts.SessionTTL)}
	token := randomHex(32)
	a.mu.Lock()
	a.gcLocked()
	a.sessions[token] = s
	a.mu.Unlock()
	http.SetCookie(c.Writer, &http.Cookie{Name: CookieName, Value: token, Path: "/", HttpOnly: true,
		Secure: a.opts.SecureCookie, SameSite: http.SameSiteStrictMode, Expires: s.expires})
	return a.me(s), nil
}

func (a *auth) me(s *session) Me {
	return Me{Username: s.user, CSRFToken: s.csrf, ExpiresAt: s.expires.UnixMilli(), DefaultPassword: a.isDefault}
}

func (a *auth) gcLocked() {
	now := time.Now()
	for k, s := range a.sessions {
		if now.After(s.expires) {
			delete(a.sessions, k)
		}
	}
}

// session returns the request's live session, if any.
func (a *auth) session(c *gin.Context) (string, *session) {
	ck, err := c.Cookie(CookieName)
	if err != nil || ck == "" {
		return "", nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[ck]
	if !ok {
		return "", nil
	}
	if time.Now().After(s.expires) {
		delete(a.sessions, ck)
		return "", nil
	}
	return ck, s
}

func (a *auth) logout(c *gin.Context) (any, error) {
	if tok, s := a.session(c); s != nil {
		a.mu.Lock()
		delete(a.sessions, tok)
		a.mu.Unlock()
	}
	http.SetCookie(c.Writer, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, MaxAge: -1, SameSite: http.SameSiteStrictMode})
	return true, nil
}

// guard lets a request through with a live session (and, for changes, the
// session's CSRF token) or the API token; otherwise 401/403 and nothing
// runs.
func (a *auth) guard(log *zap.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		if a.opts.APIToken != "" {
			if h := c.GetHeader("Authorization"); strings.HasPrefix(h, "Bearer ") {
				if subtle.ConstantTimeCompare([]byte(strings.TrimPrefix(h, "Bearer ")), []byte(a.opts.APIToken)) == 1 {
					c.Next()
					return
				}
				failAuth(c, log, fmt.Errorf("%w: wrong API token", errUnauthorized))
				return
			}
		}
		_, s := a.session(c)
		if s == nil {
			failAuth(c, log, errLogin)
			return
		}
		if c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead {
			if subtle.ConstantTimeCompare([]byte(c.GetHeader("X-CSRF-Token")), []byte(s.csrf)) != 1 {
				failAuth(c, log, fmt.Errorf("%w: missing or wrong X-CSRF-Token header", errForbidden))
				return
			}
		}
		c.Set("session", s)
		c.Next()
	}
}

func failAuth(c *gin.Context, log *zap.Logger, err error) { httpapi.Fail(c, log, err) }

// fromThisMachine says whether a login comes from this machine itself:
// the TCP peer and the client address (after trusted proxies) are both
// loopback and no proxy forwarded it (a reverse proxy, sidecar or tunnel
// on this host makes every client look like loopback, and says so in
// these headers).
func fromThisMachine(r *http.Request, client string) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopback(host) || !isLoopback(client) {
		return false
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip", "X-Forwarded-Host"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	return true
}

// isLoopback says whether an address is this machine's loopback.
func isLoopback(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.Unmap().IsLoopback()
}
