package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// FlowSection is the flow time of sampled messages: from receipt by the
// receive service to being held by a worker (the "held" event in the
// message's history, distributed mode). In the all-in-one a submit is held
// when it is answered, so there is no such event and flow time is 0.
type FlowSection struct {
	Sampled  int     `json:"sampled"`
	Held     int     `json:"held"` // messages with a "held" event
	FlowMs   Summary `json:"flow_ms"`
	Unheld   int     `json:"not_held_yet"`
	Problems int     `json:"query_errors"`
}

// measureFlow queries up to n acknowledged messages (after waiting for the
// hand-over to settle) and summarises held - received.
func measureFlow(cfg *Config, acks []ack, n int, settle time.Duration) *FlowSection {
	time.Sleep(settle)
	if n > len(acks) {
		n = len(acks)
	}
	c := newClient(4, cfg.Timeout)
	out := &FlowSection{Sampled: n}
	var flows []float64
	step := 1
	if n > 0 && len(acks) > n {
		step = len(acks) / n
	}
	for i := 0; i < len(acks) && out.Held+out.Unheld+out.Problems < n; i += step {
		m, err := getMessage(c, cfg.URL, acks[i].ID)
		if err != nil {
			out.Problems++
			continue
		}
		held := int64(-1)
		for _, e := range m.History {
			if e.Type == "held" {
				held = e.At
				break
			}
		}
		if held < 0 {
			if m.Worker == "" {
				flows = append(flows, 0) // all-in-one: held when answered
			} else {
				out.Unheld++
			}
			continue
		}
		out.Held++
		flows = append(flows, float64(held-m.ReceivedAt))
	}
	out.FlowMs = Summarize(flows)
	return out
}

type msgView struct {
	ReceivedAt int64  `json:"received_at"`
	Worker     string `json:"worker"`
	History    []struct {
		At   int64  `json:"at"`
		Type string `json:"type"`
	} `json:"history"`
}

func getMessage(c *http.Client, base, id string) (*msgView, error) {
	resp, err := c.Get(base + "/sorakaq/msg/get?msg_id=" + id)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var env struct {
		EC     int     `json:"ec"`
		Result msgView `json:"result"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.EC != 200 {
		return nil, fmt.Errorf("get %s: HTTP %d", id, resp.StatusCode)
	}
	return &env.Result, nil
}
