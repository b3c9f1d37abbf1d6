package kafka

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// scramClient is the client side of SCRAM (RFC 5802, RFC 7677) for
// sarama's SCRAMClient interface, with the standard library only (sarama
// leaves the implementation to the caller). It sends the user name as is
// (no SASLprep): Kafka's own clients do not normalise it either.
type scramClient struct {
	hash func() hash.Hash

	user, password  string
	step            int
	nonce           string
	clientFirstBare string
	serverSignature []byte
	done            bool
}

func (c *scramClient) Begin(user, password, authzID string) error {
	if authzID != "" {
		return errors.New("scram: an authorization id is not supported")
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("scram: nonce: %w", err)
	}
	c.user, c.password, c.nonce, c.step, c.done = user, password, base64.RawStdEncoding.EncodeToString(b), 0, false
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
		c.clientFirstBare = "n=" + name + ",r=" + c.nonce
		return "n,," + c.clientFirstBare, nil
	case 2:
		return c.final(challenge)
	case 3:
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: the server refused: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || subtle.ConstantTimeCompare(v, c.serverSignature) != 1 {
			return "", errors.New("scram: the server's signature does not verify (not the server the credential is for)")
		}
		c.done = true
		return "", nil
	}
	return "", errors.New("scram: unexpected step")
}

// final answers the server-first message with the client proof.
func (c *scramClient) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	nonce, saltB64, iterS := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return "", errors.New("scram: the server's nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return "", fmt.Errorf("scram: salt: %w", err)
	}
	iter, err := strconv.Atoi(iterS)
	if err != nil || iter < 1 {
		return "", fmt.Errorf("scram: iteration count %q", iterS)
	}
	salted, err := pbkdf2.Key(c.hash, c.password, salt, iter, c.hash().Size())
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	clientKey := c.hmac(salted, "Client Key")
	h := c.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte("n,,")) + ",r=" + nonce
	authMessage := c.clientFirstBare + "," + serverFirst + "," + withoutProof
	proof := c.hmac(storedKey, authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverSignature = c.hmac(c.hmac(salted, "Server Key"), authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func (c *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(c.hash, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (c *scramClient) Done() bool { return c.done }

// scramAttrs parses "a=1,b=2" (values may contain '=').
func scramAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}
