package explorer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/explorer"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

type holder struct{}

func (holder) String() string { return "test holder" }

type fixture struct {
	r   *driver.Registry
	e   *explorer.Explorer
	srv *httptest.Server
}

func newFixture(t *testing.T, cfg explorer.Config) *fixture {
	t.Helper()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, r)
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "disk", Class: "TestDisk", ProviderClass: "Device",
		New: func() driver.Driver { return nopDriver{} }}))
	cfg.Registry = r
	f := &fixture{r: r, e: explorer.New(cfg)}
	f.srv = httptest.NewServer(f.e)
	t.Cleanup(func() {
		f.e.Close()
		f.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		rec.Check(t)
	})
	return f
}

func (f *fixture) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp.StatusCode
}

type node struct {
	ID        uint64   `json:"id"`
	Class     string   `json:"class"`
	Name      string   `json:"name"`
	Driver    string   `json:"driver"`
	State     string   `json:"state"`
	Retain    int      `json:"retain"`
	Providers []uint64 `json:"providers"`
	Clients   []uint64 `json:"clients"`
}

type event struct {
	Seq      uint64  `json:"seq"`
	TimeMS   float64 `json:"time_ms"`
	Step     string  `json:"step"`
	ID       uint64  `json:"id"`
	Class    string  `json:"class"`
	Provider uint64  `json:"provider"`
}

type detail struct {
	node
	Freed      bool           `json:"freed"`
	Traced     bool           `json:"traced"`
	Properties map[string]any `json:"properties"`
	Holders    []struct {
		What   string   `json:"what"`
		Stacks []string `json:"stacks"`
	} `json:"holders"`
	Why      []string `json:"why"`
	Timeline []event  `json:"timeline"`
}

func steps(evs []event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Step)
	}
	return out
}

func TestTreeServiceAndTimeline(t *testing.T) {
	leaktest.Check(t)
	f := newFixture(t, explorer.Config{})
	dev := f.r.NewNub("Device", "disk0", driver.NewProperties(map[string]any{"vendor": "ACME", "blocks": uint64(2048)}))
	require.NoError(t, f.r.Publish(nil, dev))

	var tr struct {
		SchemaVersion int    `json:"schema_version"`
		Seq           uint64 `json:"seq"`
		Services      []node `json:"services"`
	}
	require.Equal(t, http.StatusOK, f.get(t, "/api/tree", &tr))
	require.Equal(t, 1, tr.SchemaVersion)
	require.NotZero(t, tr.Seq)
	byClass := map[string]node{}
	for _, n := range tr.Services {
		byClass[n.Class] = n
	}
	require.Len(t, byClass, 3, "root, device, driver: %+v", tr.Services)
	d, drv := byClass["Device"], byClass["TestDisk"]
	require.Equal(t, "disk0", d.Name)
	require.Equal(t, []uint64{drv.ID}, d.Clients)
	require.Equal(t, []uint64{d.ID}, drv.Providers)
	require.Equal(t, "disk", drv.Driver)
	require.Equal(t, "active", drv.State)
	require.NotZero(t, drv.Retain)

	var det detail
	require.Equal(t, http.StatusOK, f.get(t, "/api/services/"+itoa(d.ID), &det))
	require.Equal(t, "ACME", det.Properties["vendor"])
	require.EqualValues(t, 2048, det.Properties["blocks"])
	require.Equal(t, []string{"publish", "attach"}, steps(det.Timeline))
	require.Equal(t, http.StatusOK, f.get(t, "/api/services/"+itoa(drv.ID), &det))
	require.Equal(t, []string{"attach", "start"}, steps(det.Timeline))
	require.True(t, det.Traced)
	require.NotEmpty(t, det.Why)

	// Held after unplug: holders with stacks, the why-alive chain, the
	// leak report.
	dev.TaggedRetain(holder{})
	dev.Terminate() // its driver goes; the device stays, held
	require.Eventually(t, func() bool {
		f.get(t, "/api/services/"+itoa(d.ID), &det)
		return det.State == "stopped"
	}, 5*time.Second, 5*time.Millisecond)
	require.NotEmpty(t, det.Holders)
	require.Contains(t, det.Holders[0].What, "test holder")
	require.NotEmpty(t, det.Holders[0].Stacks)
	require.Contains(t, strings.Join(det.Why, "\n"), "test holder")
	var lk struct {
		Objects int    `json:"objects"`
		Text    string `json:"text"`
	}
	require.Equal(t, http.StatusOK, f.get(t, "/api/leaks", &lk))
	require.Equal(t, 1, lk.Objects)
	require.Contains(t, lk.Text, "Device#")
	require.Contains(t, lk.Text, "TestTreeServiceAndTimeline", "the holder's stack")

	// Freed: gone from the tree, its timeline still known.
	dev.TaggedRelease(holder{})
	require.NoError(t, f.r.WaitQuiet(context.Background()))
	require.Equal(t, http.StatusOK, f.get(t, "/api/services/"+itoa(d.ID), &det))
	require.True(t, det.Freed)
	require.Equal(t, "freed", det.State)
	require.Equal(t, "free", det.Timeline[len(det.Timeline)-1].Step)
	require.Equal(t, http.StatusOK, f.get(t, "/api/leaks", &lk))
	require.Zero(t, lk.Objects)

	var tl struct {
		Events []event `json:"events"`
	}
	require.Equal(t, http.StatusOK, f.get(t, "/api/timeline?limit=3", &tl))
	require.Len(t, tl.Events, 3)
	require.Equal(t, "free", tl.Events[2].Step)

	require.Equal(t, http.StatusNotFound, f.get(t, "/api/services/99999", nil))
	require.Equal(t, http.StatusBadRequest, f.get(t, "/api/services/x", nil))
}

func itoa(v uint64) string { b, _ := json.Marshal(v); return string(b) }

// TestEventStream follows /api/events: a hello with the current seq, then
// each step as it happens; Close ends the stream.
func TestEventStream(t *testing.T) {
	leaktest.Check(t)
	f := newFixture(t, explorer.Config{})
	resp, err := http.Get(f.srv.URL + "/api/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(resp.Body)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	next := func(prefix string) string {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				require.True(t, ok, "stream ended before %q", prefix)
				if strings.HasPrefix(l, prefix) {
					return strings.TrimPrefix(l, prefix)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no %q", prefix)
			}
		}
	}
	require.Equal(t, "hello", next("event: "))
	dev := f.r.NewNub("Device", "disk1", driver.Properties{})
	require.NoError(t, f.r.Publish(nil, dev))
	var seen []string
	for len(seen) < 3 {
		require.Equal(t, "step", next("event: "))
		var ev event
		require.NoError(t, json.Unmarshal([]byte(next("data: ")), &ev))
		require.NotZero(t, ev.TimeMS)
		seen = append(seen, ev.Step+" "+ev.Class)
	}
	require.Equal(t, []string{"publish Device", "attach Device", "attach TestDisk"}, seen)
	f.e.Close()
	for range lines { // the stream ends
	}
	require.NoError(t, dev.TerminateSync(context.Background()))
}

func TestReadOnlyAndAssets(t *testing.T) {
	leaktest.Check(t)
	f := newFixture(t, explorer.Config{})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, f.srv.URL+"/api/tree", nil)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	}
	resp, err := http.Get(f.srv.URL + "/")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), `/assets/app.js`)
	require.NotContains(t, string(page), "http://", "no external asset")
	require.NotContains(t, string(page), "https://", "no external asset")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	for _, a := range []string{"/assets/app.js", "/assets/style.css", "/assets/icon.svg"} {
		resp, err := http.Get(f.srv.URL + a)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
	}
	require.Equal(t, http.StatusNotFound, f.get(t, "/api/terminate", nil))
}

// FuzzServiceAPI: whatever the path and query, the API answers without a
// server error and without changing the registry.
func FuzzServiceAPI(f *testing.F) {
	for _, s := range []string{"1", "0", "18446744073709551615", "18446744073709551616", "-1", "x", "%00", "1/../../tree", "1?x=1"} {
		f.Add(s, "3")
	}
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(context.Background())
	e := explorer.New(explorer.Config{Registry: r})
	defer e.Close()
	dev := r.NewNub("Device", "d", driver.Properties{})
	_ = r.Publish(nil, dev)
	defer dev.Terminate()
	f.Fuzz(func(t *testing.T, id, limit string) {
		for _, target := range []string{"/api/services/" + id, "/api/timeline?limit=" + limit, "/api/leaks?all=" + limit} {
			req, err := http.NewRequest(http.MethodGet, "http://x/", nil)
			require.NoError(t, err)
			req.URL.Path, req.URL.RawQuery, _ = strings.Cut(target, "?")
			w := httptest.NewRecorder()
			e.ServeHTTP(w, req)
			require.Less(t, w.Code, 500, "%s: %s", target, w.Body.String())
		}
		require.True(t, dev.State().Active)
	})
}

// hideSecrets is a View that hides the names and the "owner" property of
// services of class Secret, and the word "hunter2" in texts.
type hideSecrets struct{}

func (hideSecrets) Service(s *driver.Service, name *string, props map[string]any) {
	if s.Class() == "Secret" {
		*name = ""
		delete(props, "owner")
	}
}

func (hideSecrets) EventName(class, name string) string {
	if class == "Secret" {
		return ""
	}
	return name
}

func (hideSecrets) Text(b []byte) []byte {
	return []byte(strings.ReplaceAll(string(b), "hunter2", "[hidden]"))
}

// TestViewHides: what a View hides is hidden from every reply of a
// request it governs — the tree, a detail, the timelines, the leak
// report, the event stream — and nothing else is.
func TestViewHides(t *testing.T) {
	f := newFixture(t, explorer.Config{ViewOf: func(r *http.Request) explorer.View {
		if r.URL.Query().Get("as") == "reader" {
			return hideSecrets{}
		}
		return nil
	}})
	resp, err := http.Get(f.srv.URL + "/api/events?as=reader")
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	require.True(t, lines.Scan()) // retry:
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "data:") {
	}
	nub := f.r.NewNub("Secret", "hunter2", driver.NewProperties(map[string]any{"owner": "alice", "size": 1}))
	require.NoError(t, f.r.Publish(nil, nub))
	defer nub.Terminate()
	var streamed []string
	for len(streamed) < 2 && lines.Scan() {
		if d, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			streamed = append(streamed, d)
		}
	}
	for _, d := range streamed {
		require.NotContains(t, d, "hunter2", "the stream hides the name")
		require.Contains(t, d, `"class":"Secret"`)
	}

	for _, as := range []string{"reader", "admin"} {
		var tr struct{ Services []node }
		require.Equal(t, http.StatusOK, f.get(t, "/api/tree?as="+as, &tr))
		var d detail
		require.Equal(t, http.StatusOK, f.get(t, "/api/services/"+itoa(nub.ID())+"?as="+as, &d))
		var tl struct {
			Events []struct{ Class, Name string }
		}
		require.Equal(t, http.StatusOK, f.get(t, "/api/timeline?as="+as, &tl))
		var names []string
		for _, n := range tr.Services {
			if n.Class == "Secret" {
				names = append(names, n.Name)
			}
		}
		for _, e := range tl.Events {
			if e.Class == "Secret" {
				names = append(names, e.Name)
			}
		}
		names = append(names, d.Name)
		require.GreaterOrEqual(t, len(names), 3, "tree, timeline and detail name it")
		if as == "reader" {
			for _, n := range names {
				require.Empty(t, n)
			}
			require.NotContains(t, d.Properties, "owner")
			require.Contains(t, d.Properties, "size", "what the view keeps is shown")
		} else {
			for _, n := range names {
				require.Equal(t, "hunter2", n)
			}
			require.Equal(t, "alice", d.Properties["owner"])
		}
	}
}
