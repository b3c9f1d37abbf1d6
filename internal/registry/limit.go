package registry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sorakaq/sorakaq/internal/message"
)

// ErrTopicLimit is returned (wrapped) by a limited registry's CreateTopic
// once topics.max topics exist. It is a conflict (HTTP 409): retrying
// does not help until topics are removed or the limit raised.
var ErrTopicLimit = fmt.Errorf("%w: topic limit reached", message.ErrConflict)

// Limit returns t with CreateTopic refused once max topics exist (max <= 0:
// no limit). Without a limit any client of the receive API created topics
// at will (auto_create_topics): in the all-in-one each one rewrites and
// fsyncs the whole topics file and adds metric series; in the distributed
// mode each one is a znode with its own watch. Creates are serialised in
// this process; several receive processes can overshoot the limit by the
// creates they make at the same moment.
func Limit(t Topics, max int) Topics {
	if max <= 0 {
		return t
	}
	return &limited{Topics: t, max: max}
}

type limited struct {
	Topics
	max int

	mu     sync.Mutex
	full   bool      // the limit was reached at fullAt...
	fullAt time.Time // ...so new names are refused for a second without listing again
}

func (l *limited) CreateTopic(ctx context.Context, t Topic) (*Topic, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full && time.Since(l.fullAt) < time.Second {
		if _, err := l.Topics.GetTopic(ctx, t.Name); err == nil {
			return l.Topics.CreateTopic(ctx, t) // exists: let the registry say so
		}
		return nil, l.refusal(t.Name)
	}
	list, err := l.Topics.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting topics for topics.max: %w", err)
	}
	if len(list) >= l.max {
		for _, x := range list {
			if x.Name == t.Name {
				return l.Topics.CreateTopic(ctx, t)
			}
		}
		l.full, l.fullAt = true, time.Now()
		return nil, l.refusal(t.Name)
	}
	l.full = false
	return l.Topics.CreateTopic(ctx, t)
}

func (l *limited) refusal(name string) error {
	return fmt.Errorf("%w: topic %q cannot be created: %d topics exist, the most allowed (topics.max)", ErrTopicLimit, name, l.max)
}
