package driver_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// inlineTestDriver is a testDriver whose messages may be delivered on the
// sender's goroutine.
type inlineTestDriver struct{ *testDriver }

func (inlineTestDriver) MessageInline() {}

// Concurrent publish, attach, open, close, submit, message (through the
// pool and inline) and terminate for a while: no deadlock, no leak, and
// the trace keeps the contract.
func TestConcurrentChurn(t *testing.T) {
	e := newEnv(t, driver.WithJobConcurrency(2))
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "drv", ProviderClass: "Dev",
		New: func() driver.Driver {
			return &testDriver{log: &callLog{}, start: func(ctx context.Context, s *driver.Service) error {
				return s.Submit(driver.Job{Key: "init", Run: func(ctx context.Context) error {
					select {
					case <-ctx.Done():
					case <-time.After(time.Millisecond):
					}
					return nil
				}})
			}, message: func(s *driver.Service, m driver.Message) error { return nil }}
		}}))
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			var mine []*driver.Service
			for time.Now().Before(deadline) {
				switch rng.IntN(6) {
				case 0, 1:
					n := e.r.NewNub("Dev", "", driver.Properties{})
					if err := e.r.Publish(nil, n); err == nil {
						mine = append(mine, n)
					}
				case 2:
					if len(mine) == 0 {
						continue
					}
					n := mine[rng.IntN(len(mine))]
					for _, d := range n.Clients() {
						var h driver.MessageHandler = &testDriver{log: &callLog{}}
						if rng.IntN(2) == 0 {
							// Delivered to on the sender's goroutine.
							h = inlineTestDriver{h.(*testDriver)}
						}
						uc, err := e.r.AttachClient(d, "UC", "", h)
						if err != nil {
							continue
						}
						_ = d.Open(uc, driver.OpenOptions{Exclusive: rng.IntN(2) == 0})
						if rng.IntN(2) == 0 {
							_ = d.Close(uc)
						}
						d.MessageClients(driver.MessageDriverDefined, nil)
						if rng.IntN(3) == 0 {
							uc.Terminate()
						}
					}
				case 3:
					if len(mine) == 0 {
						continue
					}
					i := rng.IntN(len(mine))
					for _, d := range mine[i].Clients() {
						_ = d.Submit(driver.Job{Run: func(ctx context.Context) error { return nil }})
					}
				case 4, 5:
					if len(mine) == 0 {
						continue
					}
					i := rng.IntN(len(mine))
					mine[i].Terminate()
					mine = append(mine[:i], mine[i+1:]...)
				}
			}
			for _, n := range mine {
				n.Terminate()
			}
		}()
	}
	wg.Wait()
	// User clients hold drivers open and answer RequestingClose? No: they
	// are MessageHandlers that ignore it, so close for them, as an
	// application would.
	for _, s := range e.r.Services() {
		for _, c := range s.Openers() {
			_ = s.Close(c)
		}
	}
	e.rec.CheckPartial(t)
	require.NoError(t, e.r.WaitQuiet(ctxT(t)))
	e.rec.Check(t)
	n := len(e.rec.Events())
	t.Logf("%d lifecycle events", n)
	require.Greater(t, n, 1000)
}
