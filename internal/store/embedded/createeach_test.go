package embedded

import (
	"context"
	"errors"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// CreateEach stores the messages whose key is free and answers a
// DuplicateError for the others (a key stored before, or repeated in the
// call), where Create refuses them all.
func TestCreateEachStoresAllButTakenKeys(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	old := msg("t", 1000)
	old.IdemKey = "k1"
	if err := s.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	a, dupOld, b, c, dupC := msg("t", 1000), msg("t", 1000), msg("t", 2000), msg("t", 3000), msg("t", 3000)
	dupOld.IdemKey, c.IdemKey, dupC.IdemKey = "k1", "k2", "k2"
	b.IdemKey = "k1" // the same key in another topic is another key
	b.Topic = "u"
	errs, err := s.CreateEach(ctx, a, dupOld, b, c, dupC)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"", old.ID, "", "", c.ID}
	for i, w := range want {
		var dup *store.DuplicateError
		if w == "" && errs[i] != nil || w != "" && (!errors.As(errs[i], &dup) || dup.ID != w) {
			t.Errorf("item %d: %v, want duplicate of %q", i, errs[i], w)
		}
	}
	for _, m := range []*message.Message{a, b, c} {
		if _, err := s.Get(ctx, m.ID); err != nil {
			t.Errorf("%s not stored: %v", m.ID, err)
		}
	}
	for _, m := range []*message.Message{dupOld, dupC} {
		if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("duplicate %s stored: %v", m.ID, err)
		}
	}
	cnt, _ := s.Counts(ctx)
	if cnt["t"][message.StateDelayed] != 3 || cnt["u"][message.StateDelayed] != 1 {
		t.Errorf("counts %v", cnt)
	}
}
