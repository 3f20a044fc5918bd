package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drvkit/drvkit/explorer"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/internal/peercred"
	"github.com/drvkit/drvkit/metrics"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// observeOptions are serve's --http flags: Prometheus metrics and the
// registry explorer on one read-only listener, off unless asked for.
type observeOptions struct {
	addr        string
	allowRemote bool
	pprof       bool
}

func observeFlags(fs *flag.FlagSet, o *observeOptions) {
	fs.StringVar(&o.addr, "http", "", "serve Prometheus metrics (/metrics) and the registry explorer (/) on `address`: host:port on loopback "+
		"(e.g. 127.0.0.1:9464), or a Unix socket path (absolute, or unix:PATH); off when empty")
	fs.BoolVar(&o.allowRemote, "http-allow-remote", false, "let --http bind to an address other than loopback; "+
		"the explorer shows every device, client and stack: put authentication (a reverse proxy) in front")
	fs.BoolVar(&o.pprof, "http-pprof", false, "also serve Go's profiler at /debug/pprof/ on the --http listener")
}

// observer is the daemon's --http listener: metrics and explorer.
type observer struct {
	d        *daemon
	opts     observeOptions
	ln       net.Listener
	unixPath string // the socket file to remove, if any
	metrics  *metrics.Collector
	explorer *explorer.Explorer
	srv      *http.Server
	served   chan struct{}
	cancel   func() // the hub subscription feeding uevents to the metrics
	once     sync.Once
}

// newObserver binds the listener (refusing a non-loopback address without
// --http-allow-remote) and starts following the registry, so nothing
// published from now on is missed; serve starts answering. It returns nil
// when --http is off.
func newObserver(d *daemon, o observeOptions) (*observer, error) {
	if o.addr == "" {
		if o.allowRemote || o.pprof {
			return nil, usagef("--http-allow-remote and --http-pprof need --http")
		}
		return nil, nil
	}
	ln, unixPath, err := listenHTTP(o.addr, o.allowRemote, d.opts.socketGroup)
	if err != nil {
		return nil, err
	}
	ob := &observer{d: d, opts: o, ln: ln, unixPath: unixPath, served: make(chan struct{})}
	cfg := metrics.Config{
		Registry: d.reg,
		Bridge:   lazyBridge{d},
		Clients:  lazyClients{d},
		Bundles:  lazyBundles{d},
		Refcount: true,
	}
	if d.opts.sim == "" { // a simulated bus has no netlink socket to count
		cfg.Uevents = lazyUevents{d}
	}
	ob.metrics = metrics.New(cfg)
	ob.explorer = explorer.New(explorer.Config{Registry: d.reg, Log: d.log, ViewOf: viewOfRequest})
	ob.cancel = d.hub.subscribe(func(e monitorEvent) {
		if e.Kind != "kernel" {
			return
		}
		if a, ok := hotplug.ParseAction(e.Action); ok {
			ob.metrics.Uevent(a, e.Devpath, time.Now())
		}
	})
	return ob, nil
}

// Lazy sources: the bridge and the user-client server are created after the
// observer; scrapes start only once they exist (serve runs after both).
type (
	lazyUevents struct{ d *daemon }
	lazyBridge  struct{ d *daemon }
	lazyClients struct{ d *daemon }
	lazyBundles struct{ d *daemon }
)

// BundleStats reports the out-of-process host's counters (set up after the
// observer, before anything is served).
func (l lazyBundles) BundleStats() []metrics.Bundle {
	if l.d.host == nil {
		return nil
	}
	var out []metrics.Bundle
	for _, c := range l.d.host.Counts() {
		out = append(out, metrics.Bundle{Driver: c.Driver, Starts: c.Starts, Crashes: c.Crashes, Disables: c.Disables})
	}
	return out
}

func (l lazyUevents) Stats() hotplug.Stats {
	if l.d.netlink == nil {
		return hotplug.Stats{}
	}
	return l.d.netlink.Stats()
}

func (l lazyBridge) Stats() hotplug.BridgeStats {
	if l.d.bridge == nil {
		return hotplug.BridgeStats{}
	}
	return l.d.bridge.Stats()
}

func (l lazyClients) Stats() server.Stats {
	if l.d.srv == nil {
		return server.Stats{}
	}
	return l.d.srv.Stats()
}

// handler is everything the listener answers: GET and HEAD only.
func (ob *observer) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(ob.metrics,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
		ErrorLog:            slogPrinter{ob.d.log},
	}))
	if ob.opts.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/", ob.explorer)
	var h http.Handler = mux
	if !ob.opts.allowRemote && ob.unixPath == "" {
		h = loopbackHost(h)
	}
	return readOnly(ob.peerAccess(h))
}

// viewKey is the context key of what a request's peer may see
// (explorerView); absent: everything.
type viewKey struct{}

func viewOfRequest(r *http.Request) explorer.View {
	if v, ok := r.Context().Value(viewKey{}).(explorerView); ok {
		return v
	}
	return nil
}

// credKey is the context key of a connection's peer, found once per
// connection (http.Server.ConnContext).
type credKey struct{}

type peerResult struct {
	cred   userclient.Cred
	err    error
	remote bool // not on this host: nobody can say who it is
}

// peerOf identifies who is at the other end of c: SO_PEERCRED on the Unix
// socket, the owner of the peer's socket (/proc/net/tcp) over loopback.
func peerOf(c net.Conn) peerResult {
	switch c := c.(type) {
	case *net.UnixConn:
		pc, err := peercred.Unix(c)
		if err != nil {
			return peerResult{err: err}
		}
		cred := userclient.Cred{PID: pc.PID, UID: pc.UID, GID: pc.GID}
		cred.Groups, _ = groupsOf(pc.UID)
		return peerResult{cred: cred}
	case *net.TCPConn:
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			return peerResult{remote: true}
		}
		pc, err := peercred.TCP(c.LocalAddr(), c.RemoteAddr())
		if err != nil {
			return peerResult{err: err}
		}
		// The kernel lists only the socket's owner: its groups are the
		// user's groups.
		cred := userclient.Cred{UID: pc.UID, GID: peercred.NoGID}
		cred.Groups, _ = groupsOf(pc.UID)
		return peerResult{cred: cred}
	}
	return peerResult{err: fmt.Errorf("%T: cannot tell who the peer is", c)}
}

// groupsOf lists uid's groups (primary and supplementary).
func groupsOf(uid uint32) ([]uint32, error) {
	names, err := lookupGroups(uid)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(names))
	for _, n := range names {
		if g, err := strconv.ParseUint(n, 10, 32); err == nil {
			out = append(out, uint32(g))
		}
	}
	return out, nil
}

// peerAccess lets a request through only if its peer has the socket's
// read right: the metrics and the explorer show what inspect, monitor and
// leaks show. A remote peer (--http-allow-remote) is the operator's to
// authenticate in front of the listener.
func (ob *observer) peerAccess(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(credKey{}).(peerResult)
		switch {
		case !ok:
			http.Error(w, "forbidden: cannot tell who you are", http.StatusForbidden)
			return
		case p.remote:
		case p.err != nil:
			ob.d.log.Warn("http: peer not identified", "remote", r.RemoteAddr, "err", p.err)
			http.Error(w, "forbidden: cannot tell who you are: "+p.err.Error(), http.StatusForbidden)
			return
		default:
			pol := server.Policy{} // root alone
			if ob.d.policy != nil {
				pol = *ob.d.policy
			}
			if err := pol.AllowAdmin(p.cred, opInspect); err != nil {
				ob.d.log.Warn("http: refused", "uid", p.cred.UID, "path", r.URL.Path, "err", err)
				http.Error(w, "permission denied: the metrics and the registry explorer need the read right: uid 0, an admin (--admin-uids, --admin-gids) or a reader (--read-any-user, --read-uids, --read-gids)", http.StatusForbidden)
				return
			}
			// Like the socket's read verbs, the explorer hides other
			// users' processes from a reader who is not an admin.
			if v := viewerOf(&pol, p.cred); !v.admin {
				r = r.WithContext(context.WithValue(r.Context(), viewKey{}, explorerView{v}))
			}
		}
		h.ServeHTTP(w, r)
	})
}

// serve starts answering requests.
func (ob *observer) serve() {
	ob.srv = &http.Server{
		Handler:           ob.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slogLogger(ob.d.log),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, credKey{}, peerOf(c))
		},
		// No WriteTimeout: the explorer's event stream stays open.
	}
	go func() {
		defer close(ob.served)
		if err := ob.srv.Serve(ob.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ob.d.log.Error("http listener", "err", err)
		}
	}()
	ob.d.log.Info("http: metrics at /metrics, registry explorer at /", "addr", ob.addr(), "pprof", ob.opts.pprof)
}

// addr is where the listener is, as a person would type it in a browser
// (or curl --unix-socket).
func (ob *observer) addr() string {
	if ob.unixPath != "" {
		return "unix:" + ob.unixPath
	}
	return ob.ln.Addr().String()
}

// close ends the event streams, stops the listener and stops following
// the registry. Safe to call more than once.
func (ob *observer) close() {
	ob.once.Do(func() {
		ob.explorer.Close() // event streams return, so Shutdown does not wait for them
		if ob.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := ob.srv.Shutdown(ctx); err != nil {
				_ = ob.srv.Close()
			}
			cancel()
			<-ob.served
		} else {
			_ = ob.ln.Close()
		}
		if ob.unixPath != "" {
			_ = os.Remove(ob.unixPath)
		}
		ob.cancel()
		ob.metrics.Close()
	})
}

// userClientHooks counts opens and deaths of user clients for the metrics.
func (ob *observer) userClientHooks() sessionHooks {
	if ob == nil {
		return nil
	}
	return ob.metrics
}

// sessionHooks is what the daemon's backend tells about user clients.
type sessionHooks interface {
	UserClientOpened()
	UserClientDied()
}

// countedSession tells hooks when its application dies without closing.
type countedSession struct {
	server.Session
	hooks sessionHooks
	ended atomic.Bool
}

func (s *countedSession) Close() error {
	s.ended.Store(true)
	return s.Session.Close()
}

// DirectCalls and HandOver pass a bundle's direct call channel through
// (the wrapper would otherwise hide it from the server).
func (s *countedSession) DirectCalls() bool {
	ds, ok := s.Session.(server.DirectSession)
	return ok && ds.DirectCalls()
}

func (s *countedSession) HandOver(ctx context.Context, conn *os.File, maxFrame, maxInflight int) error {
	ds, ok := s.Session.(server.DirectSession)
	if !ok {
		return fmt.Errorf("%w: no direct calls", userclient.ErrNoMethod)
	}
	return ds.HandOver(ctx, conn, maxFrame, maxInflight)
}

var _ server.DirectSession = (*countedSession)(nil)

func (s *countedSession) ClientDied() {
	if s.ended.CompareAndSwap(false, true) {
		s.hooks.UserClientDied()
	}
	s.Session.ClientDied()
}

// errNotLoopback refuses a --http address other than loopback.
var errNotLoopback = errors.New("not a loopback address")

// listenHTTP binds addr: a Unix socket path (absolute, or "unix:PATH"),
// created with the daemon socket's mode 0660 and group; otherwise host:port,
// which must be loopback unless allowRemote.
func listenHTTP(addr string, allowRemote bool, gid int) (net.Listener, string, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok || strings.HasPrefix(addr, "/") {
		if !ok {
			p = addr
		}
		return listenUnixHTTP(p, gid)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", usagef("--http %q: want host:port (e.g. 127.0.0.1:9464) or a Unix socket path", addr)
	}
	if !allowRemote {
		if err := checkLoopback(host); err != nil {
			return nil, "", usagef("--http %q: %v; the explorer shows every device, client and stack — "+
				"pass --http-allow-remote to serve it there anyway (and put authentication in front)", addr, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("http listener: %w", err)
	}
	return ln, "", nil
}

// checkLoopback accepts a loopback IP, or a name all of whose addresses are
// loopback ("localhost").
func checkLoopback(host string) error {
	if host == "" {
		return fmt.Errorf("%w: an empty host means every interface", errNotLoopback)
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%w: %s", errNotLoopback, ip)
		}
		return nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(context.Background(), host)
	if err != nil {
		return fmt.Errorf("%w: %s does not resolve: %v", errNotLoopback, host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("%w: %s resolves to %s", errNotLoopback, host, ip.IP)
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("%w: %s has no address", errNotLoopback, host)
	}
	return nil
}

func listenUnixHTTP(path string, gid int) (net.Listener, string, error) {
	if path == "" {
		return nil, "", usagef("--http unix: needs a socket path")
	}
	// A stale socket (nobody answers) is replaced; anything else is left.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, "", fmt.Errorf("http listener: %s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, "", fmt.Errorf("http listener: %s: %w", path, syscall.EADDRINUSE)
		}
		if err := os.Remove(path); err != nil {
			return nil, "", fmt.Errorf("http listener: removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, "", fmt.Errorf("http listener: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // close removes it, once
	if err := os.Chmod(path, 0o660); err == nil && gid >= 0 {
		err = os.Lchown(path, -1, gid)
		if err != nil {
			ln.Close()
			os.Remove(path)
			return nil, "", fmt.Errorf("http listener: %w", err)
		}
	} else if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, "", fmt.Errorf("http listener: %w", err)
	}
	return ln, path, nil
}

// readOnly answers anything but GET and HEAD with 405: no request on this
// listener changes anything.
func readOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only: only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackHost refuses requests that name another host (DNS rebinding: a
// web page whose name is made to resolve to 127.0.0.1 must not read the
// registry through the user's browser).
func loopbackHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.Trim(host, "[]")
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "forbidden: Host must be localhost or a loopback address", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// slogPrinter adapts the daemon's log for promhttp.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Error("metrics", "err", fmt.Sprint(v...)) }

func slogLogger(l *slog.Logger) *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }
