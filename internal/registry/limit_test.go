package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/registry"
	"github.com/sorakaq/sorakaq/internal/registry/local"
)

// Security review §11: any client could create topics without end (each
// one rewrote and fsynced the whole topics file). At topics.max a new
// topic is refused (a conflict, 409) and nothing is created; existing
// topics are still "exists", not "limit".
func TestLimit(t *testing.T) {
	ctx := context.Background()
	reg, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l := registry.Limit(reg, 2)
	for _, n := range []string{"a", "b"} {
		if _, err := l.CreateTopic(ctx, registry.Topic{Name: n}); err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	for i := 0; i < 2; i++ { // the second refusal comes from the remembered count
		_, err := l.CreateTopic(ctx, registry.Topic{Name: "c"})
		if !errors.Is(err, registry.ErrTopicLimit) || !errors.Is(err, message.ErrConflict) || !strings.Contains(err.Error(), "topics.max") {
			t.Fatalf("a third topic: %v, want ErrTopicLimit naming topics.max", err)
		}
		if _, err := l.CreateTopic(ctx, registry.Topic{Name: "a"}); !errors.Is(err, registry.ErrTopicExists) {
			t.Fatalf("an existing topic at the limit: %v, want ErrTopicExists", err)
		}
	}
	if list, _ := reg.ListTopics(ctx); len(list) != 2 {
		t.Fatalf("%d topics after the refusals, want 2", len(list))
	}
	if registry.Limit(reg, 0) != registry.Topics(reg) {
		t.Error("Limit 0 should be no limit")
	}
}
