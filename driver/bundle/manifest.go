package bundle

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ManifestName is the manifest's file name in a bundle directory.
const ManifestName = "manifest.toml"

var (
	// ErrInvalid: the manifest is malformed or asks for something not
	// allowed; the OpError says where.
	ErrInvalid = errors.New("invalid manifest")
	// ErrRoot: the manifest asks to run its driver as root.
	ErrRoot = errors.New("runs as root")
	// ErrNotSupported: an instance of a bundle's driver cannot run: the
	// entry was made without an out-of-process host.
	ErrNotSupported = errors.New("no out-of-process host for bundles")
)

// OpError is the error of reading a manifest: Op ("load"), the File, the
// Line (0: not known) and the Field (as a dotted path, "run.user",
// "personality[1].match.vid"; "": the whole file) at fault. Its message is
// "op file:line: field: cause".
type OpError struct {
	Op    string
	File  string
	Line  int
	Field string
	Err   error
}

func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *OpError) Unwrap() error { return e.Err }

// Manifest is a validated bundle manifest.
type Manifest struct {
	Path    string // the manifest file, absolute
	Name    string
	Version string
	Summary string

	Executable string   // absolute
	Args       []string // after the executable
	User       string   // as written
	Group      string   // as written; "": the user's primary group
	UID, GID   uint32
	// StartTimeout bounds the process's spawn, handshake and Start;
	// StopTimeout its answers to did_terminate and stop, together. Past them the
	// process is killed (0: the host's defaults, 10 s and 5 s).
	StartTimeout time.Duration
	StopTimeout  time.Duration

	Restart       Restart
	Access        Access
	Personalities []Personality
	Methods       []Method
}

// Restart is what the host does when the driver's process dies: relaunch it
// after Backoff (doubling up to MaxBackoff), and disable the driver after
// MaxCrashes crashes within Window.
type Restart struct {
	MaxCrashes int
	Window     time.Duration
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// DefaultRestart is the policy of a manifest without a [restart] table.
var DefaultRestart = Restart{MaxCrashes: 5, Window: time.Minute, Backoff: time.Second, MaxBackoff: 30 * time.Second}

// Access says who, besides uid 0 and administrators, may open the driver's
// services from an application. Empty: the daemon's own policy decides;
// otherwise it replaces that policy's open rules for these services
// (drvctl serve enforces it through server.Policy.Services).
type Access struct {
	UIDs []uint32
	GIDs []uint32
}

// Personality is one set of nubs the driver matches.
type Personality struct {
	Label         string // the manifest's name for it, for messages
	ProviderClass string
	Class         string // the instance's class; default: the bundle's name
	Category      string
	Score         int
	Match         []Match
}

// Match is one criterion: the nub property Prop (the manifest's Key)
// equals Value, or for integers with a Mask, equals it under the mask.
type Match struct {
	Key   string
	Prop  string
	Value any // uint64 or string
	Mask  uint64
}

// Method is a client method the driver offers applications, with the most
// bytes it takes and returns (0: no limit of its own).
type Method struct {
	Name      string
	MaxInput  int
	MaxOutput int
}

// Options are the daemon's rules for the manifests it loads.
type Options struct {
	// AllowRoot lets a manifest run its driver as uid or gid 0.
	AllowRoot bool
	// Reserved reports names a bundle may not take (the built-in drivers').
	Reserved func(name string) bool
	// LookupUser and LookupGroup resolve names (default: os/user); a
	// numeric name is taken as the id itself.
	LookupUser  func(name string) (uid, gid uint32, err error)
	LookupGroup func(name string) (gid uint32, err error)
}

// The manifest as written; validate turns it into a Manifest.
type rawManifest struct {
	Name        string           `toml:"name"`
	Version     string           `toml:"version"`
	Summary     string           `toml:"summary"`
	Run         rawRun           `toml:"run"`
	Restart     *rawRestart      `toml:"restart"`
	Access      rawAccess        `toml:"access"`
	Personality []rawPersonality `toml:"personality"`
	Method      []rawMethod      `toml:"method"`
}

type rawRun struct {
	Executable   string         `toml:"executable"`
	Args         []string       `toml:"args"`
	User         string         `toml:"user"`
	Group        string         `toml:"group"`
	StartTimeout *time.Duration `toml:"start_timeout"`
	StopTimeout  *time.Duration `toml:"stop_timeout"`
}

type rawRestart struct {
	MaxCrashes *int           `toml:"max_crashes"`
	Window     *time.Duration `toml:"window"`
	Backoff    *time.Duration `toml:"backoff"`
	MaxBackoff *time.Duration `toml:"max_backoff"`
}

type rawAccess struct {
	UIDs []int64 `toml:"uids"`
	GIDs []int64 `toml:"gids"`
}

type rawPersonality struct {
	Name          string                `toml:"name"`
	ProviderClass string                `toml:"provider_class"`
	Class         string                `toml:"class"`
	Category      string                `toml:"category"`
	Score         *int                  `toml:"score"`
	Match         map[string]matchValue `toml:"match"`
}

type rawMethod struct {
	Name      string `toml:"name"`
	MaxInput  int    `toml:"max_input"`
	MaxOutput int    `toml:"max_output"`
}

// Load reads the manifest at path: a manifest file, or a bundle directory
// holding ManifestName.
func Load(path string, o Options) (*Manifest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &OpError{Op: "load", File: path, Err: err}
	}
	if fi, err := os.Stat(abs); err == nil && fi.IsDir() {
		abs = filepath.Join(abs, ManifestName)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the file is named once, by OpError
		}
		return nil, &OpError{Op: "load", File: abs, Err: err}
	}
	return Parse(abs, data, o)
}

// Parse validates the manifest data read from path (which names it in
// errors and anchors a relative executable).
func Parse(path string, data []byte, o Options) (*Manifest, error) {
	v := &validator{file: path, src: data, o: o}
	var raw rawManifest
	md, err := toml.NewDecoder(strings.NewReader(string(data))).Decode(&raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &OpError{Op: "load", File: path, Line: pe.Position.Line, Field: pe.LastKey, Err: fmt.Errorf("%w: %s", ErrInvalid, pe.Message)}
		}
		// A type error is not a ParseError but says its line and key.
		if sm := typeErrRE.FindStringSubmatch(err.Error()); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			return nil, &OpError{Op: "load", File: path, Line: line, Field: sm[2], Err: fmt.Errorf("%w: %s", ErrInvalid, sm[3])}
		}
		return nil, &OpError{Op: "load", File: path, Err: fmt.Errorf("%w: %v", ErrInvalid, strings.TrimPrefix(err.Error(), "toml: "))}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, v.fail([]string(k), "unknown key")
	}
	m, err := v.manifest(&raw)
	if err != nil {
		return nil, err
	}
	return m, nil
}

type validator struct {
	file string
	src  []byte
	o    Options
	loc  *locator
}

// fail is the error of the field at path (TOML keys, array indexes as
// decimal elements).
func (v *validator) fail(path []string, format string, args ...any) error {
	return v.failErr(path, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
}

func (v *validator) failErr(path []string, err error) error {
	if v.loc == nil {
		v.loc = newLocator(v.src)
	}
	return &OpError{Op: "load", File: v.file, Line: v.loc.line(path), Field: fieldName(path), Err: err}
}

// fieldName writes a path as run.user or personality[1].match.vid.
func fieldName(path []string) string {
	var b strings.Builder
	for _, p := range path {
		if _, err := strconv.Atoi(p); err == nil {
			b.WriteString("[" + p + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// matchValue is a match key's value as written (integer, string or
// {value, mask}), checked by keySpec.parse. As a toml.Unmarshaler it takes
// an inline table whole, so its keys are not reported as unknown.
type matchValue struct{ v any }

func (m *matchValue) UnmarshalTOML(v any) error { m.v = v; return nil }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func (v *validator) manifest(raw *rawManifest) (*Manifest, error) {
	m := &Manifest{Path: v.file, Name: raw.Name, Version: raw.Version, Summary: raw.Summary, Args: raw.Run.Args}
	switch {
	case raw.Name == "":
		return nil, v.fail([]string{"name"}, "missing")
	case !nameRE.MatchString(raw.Name):
		return nil, v.fail([]string{"name"}, "%q is not a driver name (lower-case letters, digits, '.', '_', '-'; at most 64)", raw.Name)
	case v.o.Reserved != nil && v.o.Reserved(raw.Name):
		return nil, v.fail([]string{"name"}, "%q is the name of a built-in driver", raw.Name)
	case strings.TrimSpace(raw.Version) == "":
		return nil, v.fail([]string{"version"}, "missing")
	case strings.ContainsAny(raw.Version, " \t\r\n"):
		return nil, v.fail([]string{"version"}, "%q has white space", raw.Version)
	}
	if err := v.run(raw, m); err != nil {
		return nil, err
	}
	if err := v.restart(raw.Restart, m); err != nil {
		return nil, err
	}
	for i, id := range raw.Access.UIDs {
		if id < 0 || id > 1<<32-2 {
			return nil, v.fail([]string{"access", "uids"}, "element %d: %d is not a uid", i, id)
		}
		m.Access.UIDs = append(m.Access.UIDs, uint32(id))
	}
	for i, id := range raw.Access.GIDs {
		if id < 0 || id > 1<<32-2 {
			return nil, v.fail([]string{"access", "gids"}, "element %d: %d is not a gid", i, id)
		}
		m.Access.GIDs = append(m.Access.GIDs, uint32(id))
	}
	if len(raw.Personality) == 0 {
		return nil, v.fail([]string{"personality"}, "missing: a bundle needs at least one [[personality]]")
	}
	for i := range raw.Personality {
		p, err := v.personality(i, &raw.Personality[i], m.Name)
		if err != nil {
			return nil, err
		}
		m.Personalities = append(m.Personalities, p)
	}
	seen := map[string]bool{}
	for i, rm := range raw.Method {
		path := []string{"method", strconv.Itoa(i)}
		switch {
		case rm.Name == "":
			return nil, v.fail(append(path, "name"), "missing")
		case seen[rm.Name]:
			return nil, v.fail(append(path, "name"), "%q given twice", rm.Name)
		case rm.MaxInput < 0:
			return nil, v.fail(append(path, "max_input"), "negative")
		case rm.MaxOutput < 0:
			return nil, v.fail(append(path, "max_output"), "negative")
		}
		seen[rm.Name] = true
		m.Methods = append(m.Methods, Method(rm))
	}
	return m, nil
}

func (v *validator) run(raw *rawManifest, m *Manifest) error {
	r := raw.Run
	if r.Executable == "" {
		return v.fail([]string{"run", "executable"}, "missing")
	}
	exe := r.Executable
	if !filepath.IsAbs(exe) {
		exe = filepath.Join(filepath.Dir(v.file), exe)
	}
	fi, err := os.Stat(exe)
	switch {
	case err != nil:
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return v.fail([]string{"run", "executable"}, "%s: %v", exe, err)
	case !fi.Mode().IsRegular():
		return v.fail([]string{"run", "executable"}, "%s is not a regular file", exe)
	case fi.Mode().Perm()&0o111 == 0:
		return v.fail([]string{"run", "executable"}, "%s is not executable", exe)
	case fi.Mode().Perm()&0o002 != 0:
		return v.fail([]string{"run", "executable"}, "%s is writable by everyone", exe)
	}
	// Anyone who may write its directory may replace it (unless the
	// directory is sticky, like /tmp, where only the owner may).
	if di, err := os.Stat(filepath.Dir(exe)); err == nil && di.Mode().Perm()&0o002 != 0 && di.Mode()&os.ModeSticky == 0 {
		return v.fail([]string{"run", "executable"}, "%s is in a directory writable by everyone", exe)
	}
	m.Executable = exe
	for _, d := range []struct {
		key string
		in  *time.Duration
		out *time.Duration
	}{{"start_timeout", r.StartTimeout, &m.StartTimeout}, {"stop_timeout", r.StopTimeout, &m.StopTimeout}} {
		if d.in == nil {
			continue
		}
		if *d.in <= 0 || *d.in > 10*time.Minute {
			return v.fail([]string{"run", d.key}, "%v: want a positive duration of at most 10m", *d.in)
		}
		*d.out = *d.in
	}

	if r.User == "" {
		return v.fail([]string{"run", "user"}, "missing: say which user the driver runs as")
	}
	uid, gid, err := v.lookupUser(r.User)
	if err != nil {
		return v.fail([]string{"run", "user"}, "%v", err)
	}
	m.User, m.UID, m.GID = r.User, uid, gid
	if r.Group != "" {
		if m.GID, err = v.lookupGroup(r.Group); err != nil {
			return v.fail([]string{"run", "group"}, "%v", err)
		}
		m.Group = r.Group
	}
	if !v.o.AllowRoot {
		if m.UID == 0 {
			return v.failErr([]string{"run", "user"}, fmt.Errorf("%w: %q is uid 0 (the daemon allows it only with --allow-root-drivers)", ErrRoot, r.User))
		}
		if m.GID == 0 {
			field := []string{"run", "group"}
			if r.Group == "" {
				field = []string{"run", "user"}
			}
			return v.failErr(field, fmt.Errorf("%w: the group is gid 0 (the daemon allows it only with --allow-root-drivers)", ErrRoot))
		}
	}
	return nil
}

func (v *validator) lookupUser(name string) (uid, gid uint32, err error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), uint32(n), nil
	}
	if v.o.LookupUser != nil {
		return v.o.LookupUser(name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("no user %q", name)
	}
	un, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gn, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("user %q has no numeric ids", name)
	}
	return uint32(un), uint32(gn), nil
}

func (v *validator) lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	if v.o.LookupGroup != nil {
		return v.o.LookupGroup(name)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("no group %q", name)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has no numeric id", name)
	}
	return uint32(n), nil
}

func (v *validator) restart(r *rawRestart, m *Manifest) error {
	m.Restart = DefaultRestart
	if r == nil {
		return nil
	}
	if r.MaxCrashes != nil {
		if *r.MaxCrashes < 1 {
			return v.fail([]string{"restart", "max_crashes"}, "%d: want at least 1", *r.MaxCrashes)
		}
		m.Restart.MaxCrashes = *r.MaxCrashes
	}
	for _, d := range []struct {
		key string
		in  *time.Duration
		out *time.Duration
	}{
		{"window", r.Window, &m.Restart.Window},
		{"backoff", r.Backoff, &m.Restart.Backoff},
		{"max_backoff", r.MaxBackoff, &m.Restart.MaxBackoff},
	} {
		if d.in == nil {
			continue
		}
		if *d.in <= 0 {
			return v.fail([]string{"restart", d.key}, "%v: want a positive duration", *d.in)
		}
		*d.out = *d.in
	}
	if m.Restart.MaxBackoff < m.Restart.Backoff {
		return v.fail([]string{"restart", "max_backoff"}, "%v is less than backoff %v", m.Restart.MaxBackoff, m.Restart.Backoff)
	}
	return nil
}

func (v *validator) personality(i int, rp *rawPersonality, name string) (Personality, error) {
	path := []string{"personality", strconv.Itoa(i)}
	p := Personality{Label: rp.Name, ProviderClass: rp.ProviderClass, Class: rp.Class, Category: rp.Category, Score: 0}
	if p.Label == "" {
		p.Label = fmt.Sprintf("%s#%d", name, i)
	}
	if p.Class == "" {
		p.Class = name
	}
	if rp.Score != nil {
		p.Score = *rp.Score
	}
	keys, ok := providerKeys[rp.ProviderClass]
	switch {
	case rp.ProviderClass == "":
		return p, v.fail(append(path, "provider_class"), "missing (one of %s)", strings.Join(providerClasses(), ", "))
	case !ok:
		return p, v.fail(append(path, "provider_class"), "unknown provider class %q (want one of %s)", rp.ProviderClass, strings.Join(providerClasses(), ", "))
	case !nameRE.MatchString(strings.ToLower(p.Class)):
		return p, v.fail(append(path, "class"), "%q is not a class name", p.Class)
	case p.Score < -1000000 || p.Score > 1000000:
		return p, v.fail(append(path, "score"), "%d is out of range (±1000000)", p.Score)
	case len(rp.Match) == 0:
		return p, v.fail(append(path, "match"), "missing: a personality must match on at least one key (%s)", strings.Join(keyNames(keys), ", "))
	}
	for _, k := range sortedKeys(rp.Match) {
		kpath := append(append([]string(nil), path...), "match", k)
		spec, ok := keys[k]
		if !ok {
			return p, v.fail(kpath, "%s has no key %q (want %s)", rp.ProviderClass, k, strings.Join(keyNames(keys), ", "))
		}
		mt, err := spec.parse(rp.Match[k].v)
		if err != nil {
			return p, v.fail(kpath, "%v", err)
		}
		mt.Key = k
		p.Match = append(p.Match, mt)
	}
	return p, nil
}
