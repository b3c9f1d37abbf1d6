package kafka

import (
	"crypto/sha256"
	"testing"
)

// TestScramRFC7677 is the SCRAM-SHA-256 exchange of RFC 7677 section 3.
func TestScramRFC7677(t *testing.T) {
	c := &scramClient{hash: sha256.New}
	if err := c.Begin("user", "pencil", ""); err != nil {
		t.Fatal(err)
	}
	c.nonce = "rOprNGfwEbeRWgbNEkqO"
	first, _ := c.Step("")
	if first != "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" {
		t.Fatalf("client-first %q", first)
	}
	final, err := c.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if err != nil {
		t.Fatal(err)
	}
	if want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="; final != want {
		t.Fatalf("client-final\n got %s\nwant %s", final, want)
	}
	if _, err := c.Step("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="); err != nil || !c.Done() {
		t.Fatalf("server-final: %v done=%v", err, c.Done())
	}
	// A server that does not know the password cannot sign.
	c2 := &scramClient{hash: sha256.New}
	_ = c2.Begin("user", "pencil", "")
	c2.nonce = "rOprNGfwEbeRWgbNEkqO"
	c2.Step("")
	c2.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if _, err := c2.Step("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="); err == nil || c2.Done() {
		t.Fatal("a wrong server signature was accepted")
	}
}
