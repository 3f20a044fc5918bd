package explorer

import (
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
)

//go:embed static
var static embed.FS

// Config configures an Explorer. Only Registry is required.
type Config struct {
	Registry *driver.Registry
	// History is how many lifecycle steps the registry timeline keeps
	// (default 4096).
	History int
	// PerService is how many steps each live service's timeline keeps
	// (default 64): a service plugged at boot keeps its own history
	// however busy the registry has been since.
	PerService int
	// StreamBuffer is how many steps a browser may fall behind before it
	// is told to re-read the tree instead (default 1024). A slow browser
	// never slows the registry.
	StreamBuffer int
	// ViewOf, when set, says what the requester may see: the explorer
	// hides through the returned View whatever it does not show (nil: all).
	ViewOf func(*http.Request) View
	Log    *slog.Logger // nil: discard
}

// View hides from one requester what they may not see — another user's
// processes behind user clients, for instance — the way the daemon's
// socket hides it from a reader who is not an administrator.
type View interface {
	// Service may clear *name and delete entries of props (nil for a
	// tree node, which carries no properties).
	Service(s *driver.Service, name *string, props map[string]any)
	// EventName is the name a lifecycle step of class shows.
	EventName(class, name string) string
	// Text rewrites an encoded reply that carries reference tags: stacks,
	// why-alive chains, leak reports.
	Text([]byte) []byte
}

// Explorer is the registry explorer's HTTP handler. Close it to stop
// following the registry and end every event stream.
type Explorer struct {
	cfg    Config
	reg    *driver.Registry
	log    *slog.Logger
	mux    *http.ServeMux
	cancel func()
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex // leaf lock: taken on the registry's event delivery
	seq     uint64     // last step seen
	ring    []driver.LifecycleEvent
	next    int // ring write position once full
	perSvc  map[uint64][]driver.LifecycleEvent
	streams map[*stream]struct{}
}

var _ http.Handler = (*Explorer)(nil)

// New starts following cfg.Registry's lifecycle stream.
func New(cfg Config) *Explorer {
	if cfg.History <= 0 {
		cfg.History = 4096
	}
	if cfg.PerService <= 0 {
		cfg.PerService = 64
	}
	if cfg.StreamBuffer <= 0 {
		cfg.StreamBuffer = 1024
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	e := &Explorer{cfg: cfg, reg: cfg.Registry, log: cfg.Log, done: make(chan struct{}),
		perSvc: map[uint64][]driver.LifecycleEvent{}, streams: map[*stream]struct{}{}}
	e.cancel = e.reg.SubscribeLifecycle(e.lifecycle)

	assets, _ := fs.Sub(static, "static")
	e.mux = http.NewServeMux()
	e.mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	e.mux.HandleFunc("GET /{$}", e.serveIndex)
	e.mux.HandleFunc("GET /api/tree", e.serveTree)
	e.mux.HandleFunc("GET /api/services/{id}", e.serveService)
	e.mux.HandleFunc("GET /api/timeline", e.serveTimeline)
	e.mux.HandleFunc("GET /api/leaks", e.serveLeaks)
	e.mux.HandleFunc("GET /api/events", e.serveEvents)
	return e
}

// Close stops following the registry and ends the event streams.
func (e *Explorer) Close() {
	e.once.Do(func() {
		e.cancel()
		close(e.done)
	})
}

// ServeHTTP serves the page and its API. Only GET and HEAD exist.
func (e *Explorer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	// Everything is same-origin and static: no inline script, no frame.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	e.mux.ServeHTTP(w, r)
}

func (e *Explorer) serveIndex(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// lifecycle runs on the registry's event delivery: record and fan out,
// never block.
func (e *Explorer) lifecycle(ev driver.LifecycleEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq = ev.Seq
	if len(e.ring) < e.cfg.History {
		e.ring = append(e.ring, ev)
	} else {
		e.ring[e.next] = ev
		e.next = (e.next + 1) % len(e.ring)
	}
	if ev.Step == driver.StepFree {
		delete(e.perSvc, ev.ServiceID)
	} else {
		h := e.perSvc[ev.ServiceID]
		if len(h) >= e.cfg.PerService {
			h = append(h[:0], h[len(h)-e.cfg.PerService/2:]...)
		}
		e.perSvc[ev.ServiceID] = append(h, ev)
	}
	if len(e.streams) == 0 {
		return
	}
	b, err := json.Marshal(eventOf(ev))
	if err != nil {
		return
	}
	var hidden []byte // the step as a viewer who may not see its name gets it
	for s := range e.streams {
		if s.view != nil && s.view.EventName(ev.Class, ev.Name) != ev.Name {
			if hidden == nil {
				x := eventOf(ev)
				x.Name = s.view.EventName(ev.Class, ev.Name)
				if hidden, err = json.Marshal(x); err != nil {
					continue
				}
			}
			s.send(hidden)
			continue
		}
		s.send(b)
	}
}

// viewOf is the requester's view (nil: everything).
func (e *Explorer) viewOf(r *http.Request) View {
	if e.cfg.ViewOf == nil {
		return nil
	}
	return e.cfg.ViewOf(r)
}

// history returns the registry timeline, oldest first, and the last seq.
func (e *Explorer) history() ([]driver.LifecycleEvent, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]driver.LifecycleEvent, 0, len(e.ring))
	out = append(out, e.ring[e.next:]...)
	out = append(out, e.ring[:e.next]...)
	return out, e.seq
}

// serviceHistory returns the steps of one service: its own timeline while
// it lives, what the registry timeline still holds once it is freed.
func (e *Explorer) serviceHistory(id uint64) []driver.LifecycleEvent {
	e.mu.Lock()
	h, ok := e.perSvc[id]
	h = append([]driver.LifecycleEvent(nil), h...)
	e.mu.Unlock()
	if ok {
		return h
	}
	all, _ := e.history()
	for _, ev := range all {
		if ev.ServiceID == id || (ev.ProviderID == id && (ev.Step == driver.StepAttach || ev.Step == driver.StepDetach)) {
			h = append(h, ev)
		}
	}
	return h
}

func (e *Explorer) lastSeq() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seq
}

// writeJSON writes v; with a view, its encoding passes through view.Text.
func writeJSON(w http.ResponseWriter, v any, view View) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if view == nil {
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(append(view.Text(b), '\n'))
}

func (e *Explorer) serveTree(w http.ResponseWriter, r *http.Request) {
	// The seq first: every step after it is pushed to the page, and the
	// tree read now reflects at least every step up to it.
	seq := e.lastSeq()
	view := e.viewOf(r)
	writeJSON(w, treeOf(e.reg, seq, view), view)
}

func (e *Explorer) serveService(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "service ID: want a decimal number", http.StatusBadRequest)
		return
	}
	d, ok := e.detail(id, e.viewOf(r))
	if !ok {
		// Freed (or never was): its timeline may still be known.
		h := e.serviceHistory(id)
		if len(h) == 0 {
			http.Error(w, "no service with ID "+strconv.FormatUint(id, 10), http.StatusNotFound)
			return
		}
		d = serviceDetail{Node: Node{ID: id, Class: h[0].Class, Name: h[0].Name, State: "freed",
			Providers: []uint64{}, Clients: []uint64{}, OpenBy: []uint64{}}, Freed: true,
			Properties: map[string]any{}, Holders: []holder{}, Why: []string{}, Timeline: eventsOf(h)}
	}
	view := e.viewOf(r)
	if view != nil {
		if d.Freed {
			d.Name = view.EventName(d.Class, d.Name)
		}
		hideNames(d.Timeline, view)
	}
	writeJSON(w, d, view)
}

// hideNames hides the names of steps view may not see.
func hideNames(evs []event, view View) {
	for i := range evs {
		evs[i].Name = view.EventName(evs[i].Class, evs[i].Name)
	}
}

func (e *Explorer) serveTimeline(w http.ResponseWriter, r *http.Request) {
	h, seq := e.history()
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n >= 0 && n < len(h) {
		h = h[len(h)-n:]
	}
	evs := eventsOf(h)
	view := e.viewOf(r)
	if view != nil {
		hideNames(evs, view)
	}
	writeJSON(w, timeline{Seq: seq, Events: evs}, view)
}

func (e *Explorer) serveLeaks(w http.ResponseWriter, r *http.Request) {
	all := r.URL.Query().Get("all") == "1"
	rep, err := leakReport(e.reg, all)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, rep, e.viewOf(r))
}

// stream is one browser following /api/events.
type stream struct {
	view   View // nil: sees every name
	ch     chan []byte
	lagged bool // set under Explorer.mu: ch overflowed, a resync is owed
	wake   chan struct{}
}

// send queues b without blocking; Explorer.mu is held.
func (s *stream) send(b []byte) {
	select {
	case s.ch <- b:
	default:
		s.lagged = true
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// heartbeat keeps proxies and the browser from timing the stream out.
const heartbeat = 15 * time.Second

func (e *Explorer) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s := &stream{view: e.viewOf(r), ch: make(chan []byte, e.cfg.StreamBuffer), wake: make(chan struct{}, 1)}
	e.mu.Lock()
	e.streams[s] = struct{}{}
	seq := e.seq
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.streams, s)
		e.mu.Unlock()
	}()
	w.WriteHeader(http.StatusOK)
	// The page reads the tree after this hello: every step after seq
	// reaches it on this stream.
	if _, err := w.Write([]byte("retry: 1000\nevent: hello\ndata: {\"seq\":" + strconv.FormatUint(seq, 10) + "}\n\n")); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-e.done:
			return
		case <-tick.C:
			buf = append(buf[:0], ": keepalive\n\n"...)
		case <-s.wake:
			e.mu.Lock()
			lagged := s.lagged
			s.lagged = false
			if lagged {
				for len(s.ch) > 0 {
					<-s.ch
				}
				seq = e.seq
			}
			e.mu.Unlock()
			if !lagged {
				continue
			}
			buf = append(buf[:0], "event: resync\ndata: {\"seq\":"...)
			buf = strconv.AppendUint(buf, seq, 10)
			buf = append(buf, "}\n\n"...)
		case b := <-s.ch:
			buf = append(buf[:0], "event: step\ndata: "...)
			buf = append(buf, b...)
			buf = append(buf, "\n\n"...)
			// Whatever else is queued goes out in the same write.
			for more := true; more && len(buf) < 64<<10; {
				select {
				case b := <-s.ch:
					buf = append(buf, "event: step\ndata: "...)
					buf = append(buf, b...)
					buf = append(buf, "\n\n"...)
				default:
					more = false
				}
			}
		}
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
