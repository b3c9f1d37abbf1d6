package client

import (
	"context"
	"net/http"
	"net/url"
)

// Admin talks to the admin service (:9087): topics and instances. Its
// every call needs admin.api_token (New(..., WithToken(token))); without
// one the server answers 401 (ErrUnauthorized). Safe for concurrent use.
//
//	a := client.NewAdmin("http://127.0.0.1:9087", client.WithToken(token))
//	ts, err := a.Topics(ctx)
type Admin struct{ c *Client }

// NewAdmin makes an admin client for baseURL, e.g. "http://127.0.0.1:9087".
func NewAdmin(baseURL string, opts ...Option) *Admin { return &Admin{c: New(baseURL, opts...)} }

// Topic is a topic as the admin service answers it.
type Topic struct {
	Name           string   `json:"topic_name"`
	Business       string   `json:"business,omitempty"`
	WorkerNum      int      `json:"worker_num"`
	Partitions     int      `json:"partitions"`
	RetryBackoffMs []int64  `json:"retry_backoff_ms,omitempty"`
	Workers        []string `json:"workers,omitempty"`
	CreatedMs      int64    `json:"created_at"`
	UpdatedMs      int64    `json:"updated_at"`
	// Paused: the topic's due messages wait (PauseTopic) since PausedMs.
	Paused   bool  `json:"paused,omitempty"`
	PausedMs int64 `json:"paused_at,omitempty"`
	// Counts are the topic's messages by state (list and get only).
	Counts map[string]int64 `json:"counts,omitempty"`
}

// TopicSpec is what AddTopic and UpdateTopic send. A nil or empty field
// is left out: AddTopic then takes the server's default, UpdateTopic
// leaves it as it is. RetryBackoffMs non-nil and empty (a []int64{}) on
// update goes back to the global schedule.
type TopicSpec struct {
	Name           string   `json:"topic_name"`
	Business       string   `json:"business,omitempty"`
	WorkerNum      *int     `json:"worker_num,omitempty"`
	Partitions     *int     `json:"partitions,omitempty"`
	RetryBackoffMs []int64  `json:"retry_backoff_ms,omitempty"`
	Workers        []string `json:"workers,omitempty"`
}

// updateSpec keeps an empty RetryBackoffMs in the body ([] resets the
// schedule), which TopicSpec's omitempty would drop.
type updateSpec struct {
	Name           string   `json:"topic_name"`
	Business       string   `json:"business,omitempty"`
	WorkerNum      *int     `json:"worker_num,omitempty"`
	Partitions     *int     `json:"partitions,omitempty"`
	RetryBackoffMs []int64  `json:"retry_backoff_ms"`
	Workers        []string `json:"workers,omitempty"`
}

// Topics lists every topic, sorted by name, with its counts.
func (a *Admin) Topics(ctx context.Context) ([]Topic, error) {
	var out []Topic
	err := a.c.do(ctx, http.MethodGet, "/sorakaq/topic/list", nil, &out)
	return out, err
}

// Topic returns one topic with its counts (ErrNotFound if there is none).
func (a *Admin) Topic(ctx context.Context, name string) (Topic, error) {
	var out Topic
	err := a.c.do(ctx, http.MethodGet, "/sorakaq/topic/get?topic_name="+url.QueryEscape(name), nil, &out)
	return out, err
}

// AddTopic creates a topic (ErrConflict if it exists).
func (a *Admin) AddTopic(ctx context.Context, t TopicSpec) (Topic, error) {
	var out Topic
	err := a.c.do(ctx, http.MethodPost, "/sorakaq/topic/add", t, &out)
	return out, err
}

// UpdateTopic changes the fields given of a topic (ErrNotFound if there
// is none) and returns it as it is after the change.
func (a *Admin) UpdateTopic(ctx context.Context, t TopicSpec) (Topic, error) {
	var body any = t
	if t.RetryBackoffMs != nil {
		body = updateSpec(t)
	}
	var out Topic
	err := a.c.do(ctx, http.MethodPost, "/sorakaq/topic/update", body, &out)
	return out, err
}

// Instance is one process of the deployment as the admin service lists
// it (the all-in-one lists itself).
type Instance struct {
	NodeID    string  `json:"node_id"`
	Role      string  `json:"role"`
	Addr      string  `json:"addr"`
	StartedMs int64   `json:"started_at"`
	Held      int64   `json:"held"`
	Load      float64 `json:"load"`
	Offline   bool    `json:"offline"`
	FireRate  float64 `json:"fire_rate"`
}

// Instances lists the deployment's processes.
func (a *Admin) Instances(ctx context.Context) ([]Instance, error) {
	var out []Instance
	err := a.c.do(ctx, http.MethodGet, "/sorakaq/instance/list", nil, &out)
	return out, err
}

// SetOffline takes a worker offline (its slots move to the others) or,
// with off false, lets it take slots again.
func (a *Admin) SetOffline(ctx context.Context, nodeID string, off bool) error {
	path := "/sorakaq/instance/online"
	if off {
		path = "/sorakaq/instance/offline"
	}
	return a.c.do(ctx, http.MethodPost, path, struct {
		NodeID string `json:"node_id"`
	}{nodeID}, nil)
}

// PauseTopic stops the topic's callbacks: its due messages wait, pending
// (attempts untouched, still cancellable), until ResumeTopic. Every
// worker honours it within a second. Pausing a paused topic is no error.
func (a *Admin) PauseTopic(ctx context.Context, name string) (Topic, error) {
	return a.pause(ctx, "/sorakaq/topic/pause", name)
}

// ResumeTopic lets a paused topic's callbacks go again: the messages that
// fell due meanwhile fire at once, in due order.
func (a *Admin) ResumeTopic(ctx context.Context, name string) (Topic, error) {
	return a.pause(ctx, "/sorakaq/topic/resume", name)
}

func (a *Admin) pause(ctx context.Context, path, name string) (Topic, error) {
	var out Topic
	err := a.c.do(ctx, http.MethodPost, path, struct {
		Name string `json:"topic_name"`
	}{name}, &out)
	return out, err
}

// Destination is one destination's flow-control state on one worker (the
// limits are per worker).
type Destination struct {
	NodeID      string  `json:"node_id"`
	Key         string  `json:"key"`
	Rate        float64 `json:"rate"`        // calls/s allowed, 0 = unlimited
	Concurrency int     `json:"concurrency"` // in flight allowed, 0 = unlimited
	InFlight    int     `json:"in_flight"`
	Queued      int     `json:"queued"` // parked until the destination has room
	// Breaker is closed, open or half_open.
	Breaker       string `json:"breaker"`
	Failures      int    `json:"failures"`
	OpenUntilMs   int64  `json:"open_until,omitempty"`
	PausedUntilMs int64  `json:"paused_until,omitempty"` // a Retry-After honoured
	Throttled     int64  `json:"throttled"`
	Started       int64  `json:"started"`
}

// Destinations lists the workers' per-destination flow-control state,
// busiest first; nodes names the workers that did not answer.
func (a *Admin) Destinations(ctx context.Context, key string) (ds []Destination, nodes []string, err error) {
	var out struct {
		Destinations []Destination `json:"destinations"`
		Errors       []struct {
			NodeID string `json:"node_id"`
		} `json:"errors"`
	}
	if err := a.c.do(ctx, http.MethodGet, "/sorakaq/admin/destinations?key="+url.QueryEscape(key), nil, &out); err != nil {
		return nil, nil, err
	}
	for _, e := range out.Errors {
		nodes = append(nodes, e.NodeID)
	}
	return out.Destinations, nodes, nil
}
