package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sorakaq/sorakaq/pkg/client"
)

func topicList(r *runner, fs *flag.FlagSet) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := r.want(0, ""); err != nil {
			return err
		}
		ts, err := r.admin().Topics(ctx)
		if err != nil {
			return err
		}
		if ts == nil {
			ts = []client.Topic{}
		}
		return r.out(ts, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tBUSINESS\tDELAYED\tRETRYING\tDELIVERED\tDEAD\tCANCELLED\tRETRY_BACKOFF")
			for _, t := range ts {
				c := t.Counts
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", t.Name, t.Business,
					c["delayed"], c["retrying"], c["delivered"], c["dead"], c["cancelled"], backoffString(t.RetryBackoffMs))
			}
			tw.Flush()
		})
	}
}

func backoffString(ms []int64) string {
	if len(ms) == 0 {
		return "default"
	}
	parts := make([]string, len(ms))
	for i, v := range ms {
		parts[i] = (time.Duration(v) * time.Millisecond).String()
	}
	return strings.Join(parts, ",")
}

func topicGet(r *runner, fs *flag.FlagSet) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := r.want(1, "a topic name"); err != nil {
			return err
		}
		t, err := r.admin().Topic(ctx, r.pos[0])
		if err != nil {
			return err
		}
		return r.out(t, func(w io.Writer) { printTopic(w, t) })
	}
}

func printTopic(w io.Writer, t client.Topic) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "topic\t%s\n", t.Name)
	if t.Business != "" {
		fmt.Fprintf(tw, "business\t%s\n", t.Business)
	}
	fmt.Fprintf(tw, "worker_num\t%d\n", t.WorkerNum)
	fmt.Fprintf(tw, "partitions\t%d\n", t.Partitions)
	fmt.Fprintf(tw, "retry_backoff\t%s\n", backoffString(t.RetryBackoffMs))
	if len(t.Workers) > 0 {
		fmt.Fprintf(tw, "workers\t%s\n", strings.Join(t.Workers, ","))
	}
	fmt.Fprintf(tw, "created_at\t%s\n", fmtMs(t.CreatedMs))
	fmt.Fprintf(tw, "updated_at\t%s\n", fmtMs(t.UpdatedMs))
	if t.Counts != nil {
		var parts []string
		for _, s := range []string{"delayed", "delivering", "retrying", "delivered", "dead", "cancelled"} {
			parts = append(parts, s+"="+strconv.FormatInt(t.Counts[s], 10))
		}
		fmt.Fprintf(tw, "counts\t%s\n", strings.Join(parts, " "))
	}
	tw.Flush()
}

// optInt is an integer flag that knows whether it was given.
type optInt struct{ v *int }

func (o *optInt) String() string { return "" }
func (o *optInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want an integer, got %q", s)
	}
	o.v = &n
	return nil
}

// topicChange is add (update false) and update.
func topicChange(update bool) command {
	return func(r *runner, fs *flag.FlagSet) func(context.Context) error {
		business := fs.String("business", "", "business")
		var workerNum, partitions optInt
		fs.Var(&workerNum, "worker-num", "worker_num")
		fs.Var(&partitions, "partitions", "partitions")
		backoff := fs.String("retry-backoff", "", "the retry schedule, e.g. 1s,10s,60s (update: default = the global one)")
		workers := fs.String("workers", "", "node ids the topic is mapped to (update only)")
		return func(ctx context.Context) error {
			if err := r.want(1, "a topic name"); err != nil {
				return err
			}
			spec := client.TopicSpec{Name: r.pos[0], Business: *business, WorkerNum: workerNum.v, Partitions: partitions.v}
			switch {
			case *backoff == "":
			case *backoff == "default" && update:
				spec.RetryBackoffMs = []int64{}
			default:
				for _, p := range strings.Split(*backoff, ",") {
					d, err := parseDuration("--retry-backoff", strings.TrimSpace(p))
					if err != nil {
						return err
					}
					spec.RetryBackoffMs = append(spec.RetryBackoffMs, d.Milliseconds())
				}
			}
			if *workers != "" {
				if !update {
					return usagef("--workers: only on update (a new topic is served by every worker)")
				}
				spec.Workers = strings.Split(*workers, ",")
			}
			a := r.admin()
			var t client.Topic
			var err error
			if update {
				t, err = a.UpdateTopic(ctx, spec)
			} else {
				t, err = a.AddTopic(ctx, spec)
			}
			if err != nil {
				return err
			}
			return r.out(t, func(w io.Writer) { printTopic(w, t) })
		}
	}
}

func instanceList(r *runner, fs *flag.FlagSet) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := r.want(0, ""); err != nil {
			return err
		}
		is, err := r.admin().Instances(ctx)
		if err != nil {
			return err
		}
		if is == nil {
			is = []client.Instance{}
		}
		return r.out(is, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE_ID\tROLE\tADDR\tHELD\tLOAD\tOFFLINE\tFIRE_RATE")
			for _, i := range is {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%t\t%.1f/s\n", i.NodeID, i.Role, i.Addr, i.Held, i.Load, i.Offline, i.FireRate)
			}
			tw.Flush()
		})
	}
}

func instanceOffline(off bool) command {
	return func(r *runner, fs *flag.FlagSet) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := r.want(1, "a worker's node id"); err != nil {
				return err
			}
			if err := r.admin().SetOffline(ctx, r.pos[0], off); err != nil {
				return err
			}
			state := "online"
			if off {
				state = "offline"
			}
			return r.out(true, func(w io.Writer) { fmt.Fprintf(w, "%s %s\n", r.pos[0], state) })
		}
	}
}
