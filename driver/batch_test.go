package driver_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// batchLog records what batched clients left for their flushes.
type batchLog struct {
	mu      sync.Mutex
	flushes [][]string // per flush, what it sent
	noBatch []string   // messages delivered without a batch
}

// batchClient is an inline client that leaves its "send" to the fan-out's
// batch under key, as a server's user client leaves its socket write.
type batchClient struct {
	name string
	key  string
	log  *batchLog
}

func (c *batchClient) Message(_ *driver.Service, m driver.Message) error {
	if m.Type != driver.MessageDriverDefined {
		return nil
	}
	line := fmt.Sprintf("%s:%v", c.name, m.Data)
	if m.Batch == nil {
		c.log.mu.Lock()
		c.log.noBatch = append(c.log.noBatch, line)
		c.log.mu.Unlock()
		return nil
	}
	f := m.Batch.Join(c.key, func() driver.BatchFlusher { return &logFlusher{log: c.log} }).(*logFlusher)
	f.lines = append(f.lines, line)
	return nil
}

func (*batchClient) MessageInline() {}

type logFlusher struct {
	log   *batchLog
	lines []string
}

func (f *logFlusher) FlushBatch() {
	f.log.mu.Lock()
	f.log.flushes = append(f.log.flushes, f.lines)
	f.log.mu.Unlock()
}

// A fan-out to inline clients flushes their batch every 64 deliveries and
// once more at the end, before MessageClients returns; each flusher is
// made once per flush by the first client that joins under its key, and
// every client's work is in exactly one flush.
func TestMessageClientsBatch(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	log := &batchLog{}
	const clients = 150
	for i := range clients {
		key := map[bool]string{false: "even", true: "odd"}[i%2 == 1]
		_, err := e.r.AttachClient(nub, "BatchClient", fmt.Sprint(i), &batchClient{name: fmt.Sprint(i), key: key, log: log})
		require.NoError(t, err)
	}
	nub.MessageClients(driver.MessageDriverDefined, 1)
	log.mu.Lock()
	flushes, noBatch := log.flushes, log.noBatch
	log.mu.Unlock()
	require.Empty(t, noBatch, "an inline delivery came without its batch")
	// Three batches of at most 64 deliveries, each with an "even" and an
	// "odd" flusher: six flushes, all before MessageClients returned.
	require.Len(t, flushes, 6)
	seen := map[string]int{}
	for i, f := range flushes {
		require.NotEmpty(t, f, "flush %d sent nothing", i)
		for _, line := range f {
			seen[line]++
		}
	}
	for i := 0; i < len(flushes); i += 2 {
		require.LessOrEqual(t, len(flushes[i])+len(flushes[i+1]), 64, "batch %d", i/2)
	}
	require.Len(t, seen, clients)
	for line, n := range seen {
		require.Equal(t, 1, n, "%s sent %d times", line, n)
	}
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// batchSeer is an inline client whose Start waits for release (its
// callback lock held while its mailbox is idle); it records whether each
// message came with a batch.
type batchSeer struct {
	started, release chan struct{}
	mu               sync.Mutex
	withBatch        []bool
}

func (b *batchSeer) Start(context.Context, *driver.Service) error {
	close(b.started)
	<-b.release
	return nil
}

func (b *batchSeer) Stop(*driver.Service) {}

func (b *batchSeer) Message(_ *driver.Service, m driver.Message) error {
	if m.Type == driver.MessageDriverDefined {
		b.mu.Lock()
		b.withBatch = append(b.withBatch, m.Batch != nil)
		b.mu.Unlock()
	}
	return nil
}

func (*batchSeer) MessageInline() {}

func (b *batchSeer) seen() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.withBatch)
}

// A message the sender cannot deliver on its goroutine (the client's
// callback lock is busy: its Start runs) is delivered later, by a
// goroutine of its own, without a batch: the fan-out's was flushed before
// MessageClients returned.
func TestMessageClientsBatchNotForLater(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	b := &batchSeer{started: make(chan struct{}), release: make(chan struct{})}
	attached := make(chan error, 1)
	go func() {
		_, err := e.r.AttachClient(nub, "InlineClient", "c", b)
		attached <- err
	}()
	<-b.started
	returns(t, sendAsync(nub, 1), "the sender waited for a client busy in Start")
	close(b.release)
	require.NoError(t, <-attached)
	require.Eventually(t, func() bool { return len(b.seen()) == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, []bool{false}, b.seen(), "the later delivery carried the fan-out's batch")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// orderLog records, in order, what a fan-out did to prefetching clients.
type orderLog struct {
	mu     sync.Mutex
	events []string
}

func (l *orderLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

type prefetchClient struct {
	name string
	log  *orderLog
}

func (p *prefetchClient) PrefetchMessage() uintptr { p.log.add("prefetch " + p.name); return 0 }

func (p *prefetchClient) Message(_ *driver.Service, m driver.Message) error {
	if m.Type == driver.MessageDriverDefined {
		p.log.add("message " + p.name)
	}
	return nil
}

func (*prefetchClient) MessageInline() {}

var _ driver.MessagePrefetcher = (*prefetchClient)(nil)

// A fan-out prefetches each chunk of up to 64 inline clients before it
// delivers to them: 100 clients are two chunks, each client is prefetched
// once and before its message, and every message of a chunk comes after
// all of that chunk's prefetches.
func TestMessageClientsPrefetch(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	log := &orderLog{}
	const clients = 100
	for i := range clients {
		_, err := e.r.AttachClient(nub, "PrefetchClient", fmt.Sprint(i), &prefetchClient{name: fmt.Sprint(i), log: log})
		require.NoError(t, err)
	}
	nub.MessageClients(driver.MessageDriverDefined, 1)
	log.mu.Lock()
	events := slices.Clone(log.events)
	log.mu.Unlock()
	require.Len(t, events, 2*clients)
	// Two chunks: 64 prefetches, 64 messages, 36 prefetches, 36 messages.
	for i, e := range events {
		want := "prefetch "
		if i >= 64 && i < 128 || i >= 164 {
			want = "message "
		}
		require.True(t, strings.HasPrefix(e, want), "event %d is %q", i, e)
	}
	for _, chunk := range [][]string{events[:128], events[128:]} {
		half := len(chunk) / 2
		pre, msg := slices.Clone(chunk[:half]), slices.Clone(chunk[half:])
		for i := range pre {
			pre[i] = strings.TrimPrefix(pre[i], "prefetch ")
			msg[i] = strings.TrimPrefix(msg[i], "message ")
		}
		slices.Sort(pre)
		slices.Sort(msg)
		require.Equal(t, pre, msg, "a chunk delivered to clients it did not prefetch")
	}
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// panickyClient is an inline client whose PrefetchMessage panics, and
// whose deferred flush panics too.
type panickyClient struct{}

func (*panickyClient) MessageInline() {}

func (*panickyClient) PrefetchMessage() uintptr { panic("prefetch broke") }

func (c *panickyClient) Message(_ *driver.Service, m driver.Message) error {
	if m.Type == driver.MessageDriverDefined && m.Batch != nil {
		m.Batch.Join("panicky", func() driver.BatchFlusher { return panicFlusher{} })
	}
	return nil
}

type panicFlusher struct{}

func (panicFlusher) FlushBatch() { panic("flush broke") }

// A third-party handler whose prefetch or deferred flush panics costs the
// fan-out nothing else: MessageClients returns, every other client's work
// is flushed (a server's flusher gives back the write sides its clients
// hold), and the log says which panicked and how.
func TestMessageClientsBatchPanics(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, driver.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	nub := e.nub()
	log := &batchLog{}
	const clients = 100
	for i := range clients {
		var impl any = &batchClient{name: fmt.Sprint(i), key: "k", log: log}
		if i%10 == 0 {
			impl = &panickyClient{}
		}
		_, err := e.r.AttachClient(nub, "BatchClient", fmt.Sprint(i), impl)
		require.NoError(t, err)
	}
	require.NotPanics(t, func() { nub.MessageClients(driver.MessageDriverDefined, "m") })
	var sent int
	log.mu.Lock()
	for _, f := range log.flushes {
		sent += len(f)
	}
	log.mu.Unlock()
	require.Equal(t, clients-clients/10, sent, "every other client's work flushed")
	out := logs.String()
	require.Contains(t, out, "prefetch broke")
	require.Contains(t, out, "flush broke")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// syncBuffer is a log's output, written by any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
