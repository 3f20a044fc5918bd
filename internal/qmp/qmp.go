package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrClosed reports that the connection to QEMU is gone (closed by the
// client, or QEMU exited).
var ErrClosed = errors.New("connection closed")

// ErrProtocol reports a message that is not valid QMP.
var ErrProtocol = errors.New("protocol error")

// OpError is returned by every operation that fails for a reason other than
// QEMU rejecting a command.
type OpError struct {
	Op  string // "dial", "greeting", "execute device_del", "wait DEVICE_DELETED", …
	Err error
}

func (e *OpError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// Error is a command's error reply.
type Error struct {
	Command string // the command that failed
	Class   string // e.g. "GenericError", "DeviceNotFound"
	Desc    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("execute %s: %s: %s", e.Command, e.Class, e.Desc)
}

// IsPermissionConflict reports whether err is QEMU refusing to attach a
// block node that a device being deleted still holds.
func IsPermissionConflict(err error) bool {
	var qe *Error
	return errors.As(err, &qe) && strings.Contains(qe.Desc, "Permission conflict")
}

// Greeting is the server's first message.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// Event is an asynchronous event.
type Event struct {
	Seq  uint64 // position in the client's event log, from 1
	Name string
	Data json.RawMessage
	Time time.Time // QEMU's timestamp
}

// Str returns the string field key of the event's data ("" if absent).
func (e Event) Str(key string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(e.Data, &m) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(m[key], &s) != nil {
		return ""
	}
	return s
}

// maxLine bounds one message; QEMU's largest replies (query-qmp-schema) are
// a few hundred KiB.
const maxLine = 16 << 20

// eventLogSize bounds the event log; older events are dropped.
const eventLogSize = 4096

type reply struct {
	ret json.RawMessage
	err *Error
}

// Client is a QMP session. Its methods are safe for concurrent use.
type Client struct {
	conn     net.Conn
	greeting Greeting

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	events  []Event // ring, oldest first
	seq     uint64  // seq of the newest event
	changed chan struct{}
	err     error // why the reader stopped
	done    chan struct{}
	stray   int // replies nobody waited for
}

// Dial connects to a QMP Unix socket, reads the greeting and negotiates
// capabilities. ctx bounds the whole handshake.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, &OpError{Op: "dial", Err: err}
	}
	c, err := NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient runs the handshake on an established connection. The client owns
// conn from then on, even when the handshake fails.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:    conn,
		pending: make(map[string]chan reply),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	r := bufio.NewScanner(conn)
	r.Buffer(make([]byte, 0, 64<<10), maxLine)

	// The greeting is read synchronously: until capabilities are
	// negotiated nothing else may arrive.
	// Cancellation (a deadline too) interrupts the read through an
	// expired read deadline, so the error is always ctx's.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	ok := r.Scan()
	stop()
	conn.SetReadDeadline(time.Time{})
	if !ok {
		err := r.Err()
		if ctx.Err() != nil {
			// The deadline or the cancellation cut the read short.
			err = ctx.Err()
		} else if err == nil {
			err = ErrClosed
		}
		conn.Close()
		return nil, &OpError{Op: "greeting", Err: err}
	}
	m, err := decode(r.Bytes())
	if err == nil && m.kind != kindGreeting {
		err = fmt.Errorf("%w: first message is not a greeting: %.100s", ErrProtocol, r.Bytes())
	}
	if err != nil {
		conn.Close()
		return nil, &OpError{Op: "greeting", Err: err}
	}
	c.greeting = m.greeting

	go c.read(r)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns the server's greeting.
func (c *Client) Greeting() Greeting { return c.greeting }

// Close closes the connection and waits for the reader to stop. Pending
// commands fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Done is closed when the connection is gone; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Client) read(r *bufio.Scanner) {
	var err error
	for r.Scan() {
		m, derr := decode(r.Bytes())
		if derr != nil {
			// One bad message must not take the session down;
			// but a peer that is not QMP at all will also fail
			// the commands waiting on it by their timeouts.
			continue
		}
		c.dispatch(m)
	}
	err = r.Err()
	if err == nil || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	close(c.changed)
	c.mu.Unlock()
	close(c.done)
}

func (c *Client) dispatch(m message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.kind {
	case kindEvent:
		c.seq++
		ev := m.event
		ev.Seq = c.seq
		if len(c.events) == eventLogSize {
			copy(c.events, c.events[1:])
			c.events = c.events[:len(c.events)-1]
		}
		c.events = append(c.events, ev)
		close(c.changed)
		c.changed = make(chan struct{})
	case kindReturn, kindError:
		id := m.id
		if id == "" && len(c.pending) == 1 {
			// QEMU answers a message it could not parse with an
			// error without id; only one command can be meant.
			for k := range c.pending {
				id = k
			}
		}
		ch, ok := c.pending[id]
		if !ok {
			c.stray++
			return
		}
		delete(c.pending, id)
		ch <- reply{ret: m.ret, err: m.err}
	default:
		c.stray++
	}
}

// Execute runs command with args (nil, or anything that marshals to a JSON
// object) and returns the "return" value. A rejected command returns *Error.
func (c *Client) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	op := "execute " + command
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{Execute: command, Arguments: args}

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, &OpError{Op: op, Err: err}
	}
	c.nextID++
	req.ID = "drvkit-" + strconv.FormatUint(c.nextID, 10)
	ch := make(chan reply, 1)
	c.pending[req.ID] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}

	b, err := json.Marshal(req)
	if err != nil {
		forget()
		return nil, &OpError{Op: op, Err: err}
	}
	b = append(b, '\n')
	c.wmu.Lock()
	// As for the greeting: ctx ending interrupts the write through an
	// expired deadline set after ctx ended, so that an interrupted write
	// is always ctx's error (a deadline copied from ctx could expire
	// before ctx reports it).
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)); close(interrupted) })
	_, err = c.conn.Write(b)
	if !stop() {
		<-interrupted
		if err != nil {
			err = ctx.Err()
		}
	}
	c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		forget()
		return nil, &OpError{Op: op, Err: err}
	}

	select {
	case r, ok := <-ch:
		if !ok {
			return nil, &OpError{Op: op, Err: c.Err()}
		}
		if r.err != nil {
			r.err.Command = command
			return nil, r.err
		}
		return r.ret, nil
	case <-ctx.Done():
		forget()
		return nil, &OpError{Op: op, Err: ctx.Err()}
	}
}

// Mark returns the sequence number of the newest event; WaitEvent(ctx, mark,
// …) considers only events after it.
func (c *Client) Mark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// Events returns the logged events after mark, oldest first.
func (c *Client) Events(mark uint64) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Event
	for _, e := range c.events {
		if e.Seq > mark {
			out = append(out, e)
		}
	}
	return out
}

// WaitEvent waits for the first event after mark named name for which match
// (nil: any) returns true.
func (c *Client) WaitEvent(ctx context.Context, mark uint64, name string, match func(Event) bool) (Event, error) {
	for {
		c.mu.Lock()
		for _, e := range c.events {
			if e.Seq > mark && e.Name == name && (match == nil || match(e)) {
				c.mu.Unlock()
				return e, nil
			}
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return Event{}, &OpError{Op: "wait " + name, Err: err}
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, &OpError{Op: "wait " + name, Err: ctx.Err()}
		}
	}
}

// DeviceDel unplugs device id and waits until QEMU reports it deleted, which
// happens only once the guest has released it.
func (c *Client) DeviceDel(ctx context.Context, id string) error {
	mark := c.Mark()
	if _, err := c.Execute(ctx, "device_del", map[string]any{"id": id}); err != nil {
		return err
	}
	_, err := c.WaitEvent(ctx, mark, "DEVICE_DELETED", func(e Event) bool { return e.Str("device") == id })
	return err
}

// RetryInterval is how often DeviceAdd retries on a permission conflict.
const RetryInterval = 50 * time.Millisecond

// DeviceAdd plugs a device (args as for device_add: "driver", "id", …). When
// its block node is still held by a just-deleted device QEMU answers
// "Permission conflict"; DeviceAdd retries every RetryInterval until ctx ends.
// It returns how many attempts were made.
func (c *Client) DeviceAdd(ctx context.Context, args map[string]any) (attempts int, err error) {
	var conflict error // the last permission conflict, kept when ctx ends
	for {
		attempts++
		_, err = c.Execute(ctx, "device_add", args)
		if err != nil && conflict != nil && ctx.Err() != nil && !IsPermissionConflict(err) {
			// ctx ended during this attempt rather than between two.
			return attempts, &OpError{Op: "device_add retry", Err: errors.Join(ctx.Err(), conflict)}
		}
		if err == nil || !IsPermissionConflict(err) {
			return attempts, err
		}
		conflict = err
		t := time.NewTimer(RetryInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return attempts, &OpError{Op: "device_add retry", Err: errors.Join(ctx.Err(), err)}
		}
	}
}

type kind int

const (
	kindInvalid kind = iota
	kindGreeting
	kindReturn
	kindError
	kindEvent
)

type message struct {
	kind     kind
	id       string // raw JSON of the id for replies ("" if none), unquoted when a string
	ret      json.RawMessage
	err      *Error
	greeting Greeting
	event    Event
}

// decode parses one QMP message. It never panics; anything that is not one
// of the four message shapes is an error wrapping ErrProtocol.
func decode(line []byte) (message, error) {
	var raw struct {
		QMP       *Greeting       `json:"QMP"`
		Return    json.RawMessage `json:"return"`
		Error     *struct{ Class, Desc string }
		Event     *string         `json:"event"`
		Data      json.RawMessage `json:"data"`
		ID        json.RawMessage `json:"id"`
		Timestamp *struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return message{}, fmt.Errorf("%w: not a JSON object: %.100q", ErrProtocol, line)
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	var m message
	if len(raw.ID) > 0 {
		var s string
		if json.Unmarshal(raw.ID, &s) == nil {
			m.id = s
		} else {
			m.id = string(raw.ID)
		}
	}
	n := 0
	if raw.QMP != nil {
		m.kind, m.greeting = kindGreeting, *raw.QMP
		n++
	}
	if raw.Return != nil {
		m.kind, m.ret = kindReturn, raw.Return
		n++
	}
	if raw.Error != nil {
		m.kind, m.err = kindError, &Error{Class: raw.Error.Class, Desc: raw.Error.Desc}
		n++
	}
	if raw.Event != nil {
		if *raw.Event == "" {
			return message{}, fmt.Errorf("%w: event without a name", ErrProtocol)
		}
		m.kind = kindEvent
		m.event = Event{Name: *raw.Event, Data: raw.Data}
		if ts := raw.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			m.event.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
		n++
	}
	switch n {
	case 0:
		return message{}, fmt.Errorf("%w: unknown message: %.100s", ErrProtocol, line)
	case 1:
		return m, nil
	default:
		return message{}, fmt.Errorf("%w: ambiguous message: %.100s", ErrProtocol, line)
	}
}
