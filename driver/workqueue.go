package driver

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/internal/faultinject"
)

// Job is a unit of asynchronous work owned by a service (the driver_async
// of this system). Run gets a context that is cancelled when the service
// stops. Free runs exactly once whatever happens: after Run returns, or
// instead of Run when the job is cancelled before it started (the service
// stopped, the registry closed), or at once when Submit refuses the job.
type Job struct {
	Key  string // jobs with the same non-empty Key run one at a time, in Submit order
	Run  func(ctx context.Context) error
	Free func()
}

type jobEntry struct {
	Job
	seq   uint64
	site  uint64    // process-wide job number for the fault hooks; 0 when none was installed at Submit
	since time.Time // when it started running
}

// jobIDs numbers jobs for the fault hooks (Submit, JobFree), so an
// exploration engine can check that each job's Free ran exactly once.
var jobIDs atomic.Uint64

// JobSite is the target of the Submit and JobFree fault hooks: one job of
// a service. It is only made while an injector is installed.
type JobSite struct {
	Svc *Service
	Num uint64
	Key string
}

func (j JobSite) ID() uint64     { return j.Num }
func (j JobSite) Class() string  { return "Job" }
func (j JobSite) Name() string   { return j.Svc.describe() + " job " + j.Key }
func (j JobSite) String() string { return j.Name() }

// jobSite reports a job at p and returns its number (0 with no injector).
func (s *Service) jobSite(p faultinject.Point, num uint64, key string) uint64 {
	if !faultinject.Enabled() {
		return num
	}
	if num == 0 && p == faultinject.Submit {
		num = jobIDs.Add(1)
	}
	if num != 0 {
		_ = faultinject.At(p, JobSite{Svc: s, Num: num, Key: key})
	}
	return num
}

func (e *jobEntry) String() string {
	if e.Key == "" {
		return fmt.Sprintf("job#%d", e.seq)
	}
	return fmt.Sprintf("job#%d(%s)", e.seq, e.Key)
}

type workQueue struct {
	s       *Service
	limit   int
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	seq     uint64
	pending []*jobEntry
	running map[*jobEntry]struct{}
	keys    map[string]bool
	stopped bool
}

func (s *Service) queue() *workQueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.extra()
	if x.q == nil {
		if s.qStopped {
			return nil
		}
		q := &workQueue{s: s, limit: s.reg.jobLimit, running: map[*jobEntry]struct{}{}, keys: map[string]bool{}}
		q.ctx, q.cancel = context.WithCancel(context.Background())
		x.q = q
	}
	return x.q
}

// Submit queues j on s. Up to the registry's job concurrency run at once.
// The job holds a reference on s (tagged by the job) until its Free has
// run. Submit fails with ErrNotActive once s has stopped; Free still runs.
func (s *Service) Submit(j Job) error {
	site := s.jobSite(faultinject.Submit, 0, j.Key)
	if j.Run == nil {
		s.reg.runFree(s, j.Free, site, j.Key)
		return opErr("submit", s, errors.New("job has no Run"))
	}
	q := s.queue()
	if q == nil {
		s.reg.runFree(s, j.Free, site, j.Key)
		return opErr("submit", s, ErrNotActive)
	}
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		s.reg.runFree(s, j.Free, site, j.Key)
		return opErr("submit", s, ErrNotActive)
	}
	q.seq++
	e := &jobEntry{Job: j, seq: q.seq, site: site}
	s.TaggedRetain(e)
	q.pending = append(q.pending, e)
	start := q.dispatchLocked()
	q.mu.Unlock()
	for _, e := range start {
		go q.run(e)
	}
	return nil
}

// dispatchLocked picks the pending jobs that may start now, keeping FIFO
// order per key: a job is held back while an earlier job with its key runs
// or waits.
func (q *workQueue) dispatchLocked() []*jobEntry {
	if q.stopped {
		return nil
	}
	var start []*jobEntry
	var held map[string]bool
	kept := q.pending[:0]
	for _, e := range q.pending {
		free := len(q.running) < q.limit
		if free && (e.Key == "" || (!q.keys[e.Key] && !held[e.Key])) {
			q.running[e] = struct{}{}
			e.since = time.Now()
			if e.Key != "" {
				q.keys[e.Key] = true
			}
			start = append(start, e)
			continue
		}
		if e.Key != "" {
			if held == nil {
				held = map[string]bool{}
			}
			held[e.Key] = true
		}
		kept = append(kept, e)
	}
	for i := len(kept); i < len(q.pending); i++ {
		q.pending[i] = nil
	}
	q.pending = kept
	return start
}

func (q *workQueue) run(e *jobEntry) {
	s := q.s
	s.busy.Add(1)
	func() {
		defer func() {
			if v := recover(); v != nil {
				s.reg.log.Error("job panicked", "service", s.describe(), "job", e.String(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}()
		err := faultinject.At(faultinject.Job, s)
		if err == nil {
			err = e.Run(q.ctx)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			s.reg.log.Warn("job failed", "service", s.describe(), "job", e.String(), "err", err)
		}
	}()
	s.reg.runFree(s, e.Free, e.site, e.Key)
	s.busy.Add(-1)
	q.mu.Lock()
	delete(q.running, e)
	if e.Key != "" {
		delete(q.keys, e.Key)
	}
	more := q.dispatchLocked()
	idle := q.stopped && len(q.running) == 0
	q.mu.Unlock()
	for _, m := range more {
		go q.run(m)
	}
	if idle {
		s.reg.kick()
	}
	s.TaggedRelease(e)
}

func (r *Registry) runFree(s *Service, free func(), site uint64, key string) {
	if site != 0 {
		s.jobSite(faultinject.JobFree, site, key)
	}
	if free == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("job free hook panicked", "service", s.describe(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	free()
}

// stop cancels the queued jobs (running their Free) and the running jobs'
// context. It does not wait: runningCount says when they are drained.
func (q *workQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	pend := q.pending
	q.pending = nil
	q.mu.Unlock()
	q.cancel()
	for _, e := range pend {
		q.s.reg.runFree(q.s, e.Free, e.site, e.Key)
		q.s.TaggedRelease(e)
	}
}

func (s *Service) stopQueue() {
	s.mu.Lock()
	q := s.jobQueueLocked()
	if q == nil {
		s.qStopped = true
	}
	s.mu.Unlock()
	if q != nil {
		q.stop()
	}
}

func (s *Service) runningJobs() int {
	s.mu.Lock()
	q := s.jobQueueLocked()
	s.mu.Unlock()
	if q == nil {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.running)
}

// Jobs reports the service's queued and running jobs.
func (s *Service) Jobs() (queued, running int) {
	s.mu.Lock()
	q := s.jobQueueLocked()
	s.mu.Unlock()
	if q == nil {
		return 0, 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending), len(q.running)
}

func (s *Service) runningJobInfo() []string {
	s.mu.Lock()
	q := s.jobQueueLocked()
	s.mu.Unlock()
	if q == nil {
		return nil
	}
	q.mu.Lock()
	es := make([]*jobEntry, 0, len(q.running))
	for e := range q.running {
		es = append(es, e)
	}
	q.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	q.mu.Lock()
	stopped := q.stopped
	q.mu.Unlock()
	note := ""
	if stopped {
		note = ", its context cancelled"
	}
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s running since %s (%s)%s",
			e.String(), e.since.Format("15:04:05.000"), time.Since(e.since).Round(time.Millisecond), note))
	}
	return out
}

// jobQueueLocked is s's queue, nil if no job was ever submitted; the caller
// holds s.mu.
func (s *Service) jobQueueLocked() *workQueue {
	if s.x == nil {
		return nil
	}
	return s.x.q
}
