package client

import (
	"context"
	"net/http"
	"net/url"
)

// Admin talks to the admin API (:9087) with its API token
// (admin.api_token). Only what programs need is here: a topic's settings
// and pausing or resuming its deliveries. Safe for concurrent use.
//
//	a := client.NewAdmin("http://127.0.0.1:9087", os.Getenv("SORAKAQ_ADMIN_API_TOKEN"))
//	t, err := a.PauseTopic(ctx, "orders") // due messages wait; submits go on
type Admin struct {
	c       *Client
	headers map[string]string
}

// NewAdmin makes an admin client for baseURL with the API token; opts are
// those of New.
func NewAdmin(baseURL, token string, opts ...Option) *Admin {
	return &Admin{c: New(baseURL, opts...), headers: map[string]string{"Authorization": "Bearer " + token}}
}

// Topic is a topic's settings and message counts per state.
type Topic struct {
	Name           string           `json:"topic_name"`
	Business       string           `json:"business"`
	WorkerNum      int              `json:"worker_num"`
	Partitions     int              `json:"partitions"`
	RetryBackoffMs []int64          `json:"retry_backoff_ms"`
	Workers        []string         `json:"workers"`
	CreatedMs      int64            `json:"created_at"`
	UpdatedMs      int64            `json:"updated_at"`
	Paused         bool             `json:"paused"`
	PausedMs       int64            `json:"paused_at"` // 0 unless paused
	Counts         map[string]int64 `json:"counts"`    // by state
}

// GetTopic returns a topic (ErrNotFound if there is none by that name).
func (a *Admin) GetTopic(ctx context.Context, name string) (Topic, error) {
	var out Topic
	err := a.c.doHeaders(ctx, http.MethodGet, "/sorakaq/topic/get?topic_name="+url.QueryEscape(name), a.headers, nil, &out)
	return out, err
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
	err := a.c.doHeaders(ctx, http.MethodPost, path, a.headers, struct {
		Name string `json:"topic_name"`
	}{name}, &out)
	return out, err
}
