package osadapter

import (
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// serveMetrics encodes the last snapshot in the format the scraper asked
// for (Prometheus text by default, or protobuf), with the Prometheus
// project's own encoder (github.com/prometheus/common/expfmt).
func (s *metricsServer) serveMetrics(w http.ResponseWriter, r *http.Request, execing <-chan struct{}) {
	snap := s.current(r, execing)
	if snap == nil {
		http.Error(w, "no metrics yet: the master is starting", http.StatusServiceUnavailable)
		return
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	w.Header().Set("Content-Type", string(format))
	w.Header().Set("Cache-Control", "no-store")
	enc := expfmt.NewEncoder(w, format)
	for _, mf := range snap.families() {
		if err := enc.Encode(mf); err != nil {
			// The scraper went away; what was written is all it gets.
			return
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		c.Close()
	}
}

// families is the snapshot as metric families, in the order of
// docs/guide.md's table.
func (s *metricsSnapshot) families() []*dto.MetricFamily {
	counter := func(v float64, labels ...string) *dto.Metric {
		return &dto.Metric{Label: pairs(labels), Counter: &dto.Counter{Value: proto.Float64(v)}}
	}
	gauge := func(v float64, labels ...string) *dto.Metric {
		return &dto.Metric{Label: pairs(labels), Gauge: &dto.Gauge{Value: proto.Float64(v)}}
	}
	var workers []*dto.Metric
	for r := range numRoles {
		for st := range numStates {
			workers = append(workers, gauge(float64(s.workers[r][st]), "role", roleNames[r], "state", stateNames[st]))
		}
	}
	var exits []*dto.Metric
	for i, n := range s.Exits {
		exits = append(exits, counter(float64(n), "reason", exitReasons[i]))
	}
	hist := &dto.Histogram{SampleSum: proto.Float64(s.ReloadSum)}
	var cum uint64
	for i, ub := range reloadBuckets {
		cum += s.ReloadCounts[i]
		hist.Bucket = append(hist.Bucket, &dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(cum)})
	}
	cum += s.ReloadCounts[len(reloadBuckets)]
	hist.SampleCount = proto.Uint64(cum)
	ready := 0.0
	if s.ready {
		ready = 1
	}
	return []*dto.MetricFamily{
		family("mworker_reloads_total", "Reloads that ended: success (the new generation became ready and serves) or failure (rolled back, or the re-exec failed).", dto.MetricType_COUNTER,
			counter(float64(s.reloadsOK), "result", "success"), counter(float64(s.reloadsFailed), "result", "failure")),
		family("mworker_reload_duration_seconds", "Time from the start of a reload to its outcome (ready or rolled back), re-exec included.", dto.MetricType_HISTOGRAM,
			&dto.Metric{Histogram: hist}),
		family("mworker_workers", "Live workers by role (current: of the serving generation; new: of a generation being started; old: of an earlier one, draining) and state (ready, starting, stopping).", dto.MetricType_GAUGE, workers...),
		family("mworker_workers_desired", "The number of workers per generation (--workers, then scale).", dto.MetricType_GAUGE, gauge(float64(s.desired))),
		family("mworker_worker_restarts_total", "Workers started again, after --backoff, in the slot of a worker of the serving generation that exited.", dto.MetricType_COUNTER, counter(float64(s.Restarts))),
		family("mworker_worker_exits_total", "Workers reaped, by how they ended: exit_zero, exit_nonzero or signal.", dto.MetricType_COUNTER, exits...),
		family("mworker_generation", "The serving generation.", dto.MetricType_GAUGE, gauge(float64(s.generation))),
		family("mworker_ready", "1 while /readyz answers 200: no stop has begun and a worker that is not stopping is ready.", dto.MetricType_GAUGE, gauge(ready)),
		family("mworker_log_lines_dropped_total", "Log lines the master dropped because stderr was not being read.", dto.MetricType_COUNTER, counter(float64(s.logDropped))),
		family("mworker_start_time_seconds", "Start time of the master (its first image: re-execs keep it), seconds since the Unix epoch.", dto.MetricType_GAUGE,
			gauge(float64(s.StartTime)/float64(time.Second))),
	}
}

func family(name, help string, t dto.MetricType, ms ...*dto.Metric) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: t.Enum(), Metric: ms}
}

func pairs(kv []string) []*dto.LabelPair {
	var out []*dto.LabelPair
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return out
}
